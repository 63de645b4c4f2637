export * from './feasibility.js';
export * from './move.js';
export * from './place.js';
export * from './ranking.js';
export * from './summary.js';
export type * from './types.js';
