/** A cluster event as `GET /api/events` returns it. */
export interface ClusterEvent {
  id: number;
  ts: number;
  type: string;
  message: string;
  nodeId?: string;
  jobId?: string;
}
