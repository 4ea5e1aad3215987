// Package workers wires CHOM's job handlers into asynq: the server with its queues,
// weights, retry policy and graceful shutdown, the handler mux with logging
// middleware, and the scheduler of periodic tasks.
package workers
