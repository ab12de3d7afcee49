// Giving idle buffers' pages back between the phases of a calibrated run (phaseMemory.ts says
// when): a thread's idle kernel workspaces and job buffers (the process's native buffer cache:
// kernels/native.ts trimNativeCache).

import { discardIdleWorkspaces } from '../kernels/kernels';
import { discardPages } from '../kernels/native';
import { discardIdleScratchBuffers } from '../base/scratchBuffers';

/** This thread's idle kernel workspaces and job buffers, their pages given back; the bytes. */
export function trimThreadMemory(): number {
  return discardIdleWorkspaces() + discardIdleScratchBuffers(discardPages);
}
