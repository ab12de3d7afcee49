export * from './errors';
export * from './dtype';
export * from './header';
export * from './checkpoint';
export * from './writer';
