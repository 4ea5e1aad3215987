package queue

import (
	"net/http"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
)

// OpsUIPath is where the asynq web UI is mounted.
const OpsUIPath = "/ops/queues"

// NewOpsUI returns the asynqmon handler rooted at OpsUIPath. readOnly hides the
// buttons that change tasks. The caller must put it behind the admin credential.
func NewOpsUI(opt asynq.RedisConnOpt, readOnly bool, prometheusAddr string) http.Handler {
	return asynqmon.New(asynqmon.Options{
		RootPath:          OpsUIPath,
		RedisConnOpt:      opt,
		ReadOnly:          readOnly,
		PrometheusAddress: prometheusAddr,
	})
}
