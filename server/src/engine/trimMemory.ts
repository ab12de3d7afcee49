// Giving idle buffers' pages back between the phases of a calibrated run (phaseMemory.ts says
// when): a worker's kernel workspaces and job buffers, and the process's native buffer cache.

import { discardIdleWorkspaces } from '../kernels/kernels';
import { discardPages, trimNativeCache } from '../kernels/native';
import { discardIdleScratchBuffers } from '../base/scratchBuffers';

/** This thread's idle kernel workspaces and job buffers, their pages given back; the bytes. */
export function trimThreadMemory(): number {
  return discardIdleWorkspaces() + discardIdleScratchBuffers(discardPages);
}

/** The native module's buffer cache (one per process, every thread's) and malloc's free pages;
 *  the bytes freed. */
export function trimProcessMemory(): number {
  return trimNativeCache();
}
