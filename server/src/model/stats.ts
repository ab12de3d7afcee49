// Second-moment statistics of a linear layer's input over calibration tokens: G = XᵀX / count,
// accumulated in float64. The forward pass (model/) produces them; calibrated LoftQ (loftq/)
// consumes them. Keys are the weight tensor names ("model.layers.0.self_attn.q_proj.weight");
// layers that read the same input (q/k/v, gate/up) share one object.

export type InputStat =
  /** Full G, row-major dim × dim (symmetric). */
  | { kind: 'full'; dim: number; count: number; g: Float64Array }
  /** Only the diagonal of G (wide inputs, or an imatrix). */
  | { kind: 'diag'; dim: number; count: number; d: Float64Array };

export type InputStats = Map<string, InputStat>;
