#!/usr/bin/env node
// Entry point for the `portcullis` command. Runs the TypeScript sources through tsx so the
// command works straight after `npm ci`; the container image runs the compiled dist/ instead.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli/bin.ts');
