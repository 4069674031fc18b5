import { main } from './main.js';

// The process entry point (bin/portcullis.js in a checkout, dist/cli/bin.js in the image).
const code = await main(process.argv.slice(2));
process.exitCode = code;
// Anything still holding the event loop open after a command finished is not worth waiting
// for; the timer is unref'd, so a clean exit happens sooner on its own.
setTimeout(() => process.exit(code), 2000).unref();
