// The registry of domain facts: quantizers and their bit widths, backends and formats,
// every setting's name, range and default, the planner's default ranks and the byte
// accounting. Pure (no node:, no vscode, no LSP imports) so the engine, the CLI, the
// server, the client and the webviews all import it; it imports nothing outside itself.
export * from './quantizers';
export * from './backends';
export * from './formats';
export * from './settings';
export * from './ranks';
export * from './bytes';
export * from './calibration';
