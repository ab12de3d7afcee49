// Which LoftQ iteration the written files hold, for the heatmap's iteration chart. Pure: no DOM.

/**
 * The 0-based iteration whose factors were saved: `best` (MatrixReport.bestIter, 1-based: a
 * calibrated run keeps its lowest output error) when the report gives it, else the last one —
 * uncalibrated LoftQ writes its last iterate, whether or not an earlier one had less error.
 */
export function keptIndex(count: number, best?: number): number {
  return best !== undefined && best >= 1 && best <= count ? best - 1 : count - 1;
}
