import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

/** The static imports of a module (import … from '…' and bare import '…'), not dynamic import(). */
function staticImports(file: string): string[] {
  const src = readFileSync(new URL(file, import.meta.url), 'utf8');
  return [...src.matchAll(/^\s*(?:import|export)\s[^;]*?from\s+'([^']+)'|^\s*import\s+'([^']+)'/gm)].map((m) => m[1] ?? m[2]);
}

describe('the CLI loads a command only when it runs (SPEC §1: --help within a few times node -e "")', () => {
  it('main.ts statically imports only its own small helpers and node builtins', () => {
    const imports = staticImports('./main.ts');
    expect(imports.length).toBeGreaterThan(0);
    expect([...new Set(imports.filter((m) => !m.startsWith('node:')))]).toEqual(['./args.js', './io.js']);
  });

  it('args.ts and io.ts import nothing of the gateway', () => {
    for (const f of ['./args.ts', './io.ts']) expect(staticImports(f).filter((m) => !m.startsWith('node:') && m !== './args.js')).toEqual([]);
  });

  it('every command module is reached through a dynamic import', () => {
    const src = readFileSync(new URL('./main.ts', import.meta.url), 'utf8');
    for (const cmd of ['serve', 'migrate', 'config', 'user', 'policy', 'routes', 'keys']) expect(src).toContain(`await import('./commands/${cmd}.js')`);
  });
});
