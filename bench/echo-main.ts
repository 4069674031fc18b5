// Runs the demo echo upstream as its own process (for benchmarks).
import { echoMain } from '../src/demo/echo.js';

await echoMain();
