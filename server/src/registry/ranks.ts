// The ranks the mixed-precision planner offers when none are given (`loftq plan`, the
// editor's planner): the usual LoRA ranks up to the analysed rank, and the analysed rank
// itself — its error is measured, the smaller ones are predicted from its spectrum.

export const PLANNER_RANKS: readonly number[] = [8, 16, 32, 64];

export function offeredRanks(analysedRank?: number): number[] {
  if (analysedRank === undefined) return [...PLANNER_RANKS];
  const ranks = PLANNER_RANKS.filter((r) => r <= analysedRank);
  if (!ranks.includes(analysedRank) && analysedRank < PLANNER_RANKS[PLANNER_RANKS.length - 1]) ranks.push(analysedRank);
  return ranks;
}
