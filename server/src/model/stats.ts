// Second-moment statistics of a linear layer's input over calibration tokens: G = XᵀX / count,
// accumulated in float64. The forward pass (model/) produces them; calibrated LoftQ (loftq/)
// consumes them. Keys are the weight tensor names ("model.layers.0.self_attn.q_proj.weight");
// layers that read the same input (q/k/v, gate/up) share one object.

export type InputStat =
  /** Full G, row-major dim × dim (symmetric). `outputSquares`: per weight name reading this
   *  input, the pass's Σ_t ‖W·x_t‖² / count = tr(W·G·Wᵀ) — the output norm a calibrated job
   *  would otherwise measure with a product as large as the matrix times its width. */
  | { kind: 'full'; dim: number; count: number; g: Float64Array; outputSquares?: Record<string, number> }
  /** Only the diagonal of G (wide inputs, or an imatrix). */
  | { kind: 'diag'; dim: number; count: number; d: Float64Array };

export type InputStats = Map<string, InputStat>;
