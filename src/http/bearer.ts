/** Reads `Authorization: Bearer …`: undefined when absent or another scheme, '' when malformed. */
export function bearerToken(header: string | undefined): string | undefined {
  if (!header) return undefined;
  if (!/^Bearer(?:[ \t]|$)/i.test(header)) return undefined;
  const m = /^Bearer[ \t]+([A-Za-z0-9\-._~+/]+=*)[ \t]*$/i.exec(header);
  return m ? m[1] : '';
}
