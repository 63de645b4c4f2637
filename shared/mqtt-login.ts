import { z } from 'zod';

/** How a node logs in to the broker: what registration hands out, and the node engine hands its net manager. */
export const MqttLoginSchema = z.object({
  url: z.string().min(1),
  username: z.string(),
  password: z.string(),
  /** The CA (PEM) that verifies an `mqtts://` broker; absent: the system's CAs. */
  ca: z.string().max(65_536).optional(),
});
export type MqttLogin = z.infer<typeof MqttLoginSchema>;
