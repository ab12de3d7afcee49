#!/usr/bin/env node
// dist/cli.js, the `loftq` command: installs the SIGINT/SIGTERM handlers (interrupt.ts) and
// only then loads the CLI itself, dist/cli-main.js (main.ts). Parsing that bundle takes
// about half a second, and a signal in that time used to kill the process with 143 instead
// of the 130 of a cancel. This file bundles to a few kilobytes.

import './interrupt';
import * as path from 'node:path';

// A path esbuild cannot follow: the main bundle is loaded at run time, not inlined here.
require(path.join(__dirname, 'cli-main.js'));
