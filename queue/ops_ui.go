package queue

import (
	"net/http"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
)

// OpsUIPath is where the asynq web UI is mounted.
const OpsUIPath = "/ops/queues"

// NewOpsUI returns the asynqmon handler rooted at OpsUIPath. With readOnly the
// UI hides the buttons that change queues and tasks, and asynqmon (v0.7) also
// refuses every non-GET call to its JSON API with 405 on the server side; the
// ingress serves that one to ops-scope tokens and refuses their mutating
// requests itself too. prometheusAddr (CHOM_PROMETHEUS_URL, e.g.
// http://prometheus:9090) feeds the UI's metrics charts; empty leaves them out. The
// caller must put the handler behind a credential (ingress.Config.OpsUI and
// OpsUIReadOnly do).
func NewOpsUI(opt asynq.RedisConnOpt, readOnly bool, prometheusAddr string) http.Handler {
	return asynqmon.New(asynqmon.Options{
		RootPath:          OpsUIPath,
		RedisConnOpt:      opt,
		ReadOnly:          readOnly,
		PrometheusAddress: prometheusAddr,
	})
}
