/**
 * Tells listeners which entity a store write touched (a job id, a node id). Listeners are called inside the
 * writer's transaction, so they only note the id and act later, after the commit: a note for a write that was
 * rolled back costs a look and changes nothing.
 */
export class ChangeFeed {
  private readonly listeners = new Set<(id: string) => void>();

  subscribe(listener: (id: string) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  emit(id: string): void {
    for (const listener of this.listeners) listener(id);
  }
}
