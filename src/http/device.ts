/**
 * A session's device in words ("Firefox on Windows", "Safari on iPhone", "curl"), from the
 * User-Agent recorded at sign-in, for the account page. Rough on purpose: it names what a
 * person would recognise and never claims more than the string says. The string is the
 * client's own words, so the result is for display only (and escaped there).
 */

/** Browsers, most specific first: Edge and Opera also say "Chrome", Chrome also says "Safari". */
const BROWSERS: readonly [RegExp, string][] = [
  [/\bEdg(?:e|A|iOS)?\//, 'Edge'],
  [/\b(?:OPR|Opera)\//, 'Opera'],
  [/\bSamsungBrowser\//, 'Samsung Internet'],
  [/\b(?:Firefox|FxiOS)\//, 'Firefox'],
  [/\bHeadlessChrome\//, 'Chrome (headless)'],
  [/\b(?:Chrome|CriOS|Chromium)\//, 'Chrome'],
  [/\bVersion\/[\d.]+.*\bSafari\//, 'Safari'],
];

/** Platforms, most specific first: iPhone and Android also say "like Mac OS X" and "Linux". */
const PLATFORMS: readonly [RegExp, string][] = [
  [/\biPhone\b/, 'iPhone'],
  [/\biPad\b/, 'iPad'],
  [/\bAndroid\b/, 'Android'],
  [/\bCrOS\b/, 'ChromeOS'],
  [/\bWindows\b/, 'Windows'],
  [/\bMac OS X\b|\bMacintosh\b/, 'macOS'],
  [/\bLinux\b/, 'Linux'],
];

/** Command-line and library clients, named by their product token. */
const TOOLS: readonly [RegExp, string][] = [
  [/^curl\//i, 'curl'],
  [/^Wget\//i, 'Wget'],
  [/^HTTPie\//i, 'HTTPie'],
  [/^python-requests\//i, 'Python (requests)'],
  [/^python-httpx\//i, 'Python (httpx)'],
  [/^Python-urllib\//i, 'Python'],
  [/^Go-http-client\//i, 'Go'],
  [/^(?:node|undici)\b/i, 'Node.js'],
  [/^axios\//i, 'Node.js (axios)'],
  [/^okhttp\//i, 'OkHttp'],
  [/^PostmanRuntime\//i, 'Postman'],
  [/^insomnia\//i, 'Insomnia'],
];

/** What a session's User-Agent says, in a few words; "Unknown device" when it says nothing we know. */
export function describeDevice(userAgent: string | null | undefined): string {
  const ua = (userAgent ?? '').trim().slice(0, 512);
  if (!ua) return 'Unknown device';
  for (const [re, name] of TOOLS) if (re.test(ua)) return name;
  const browser = BROWSERS.find(([re]) => re.test(ua))?.[1];
  const platform = PLATFORMS.find(([re]) => re.test(ua))?.[1];
  if (browser && platform) return `${browser} on ${platform}`;
  if (browser) return browser;
  if (platform) return `A browser on ${platform}`;
  return 'Unknown device';
}
