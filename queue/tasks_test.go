package queue_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"

	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
)

func TestTaskForOperation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		opType   string
		taskType string
	}{
		{models.OpTypeSiteProvision, queue.TypeSiteProvision},
		{models.OpTypeSiteDeprovision, queue.TypeSiteDeprovision},
		{models.OpTypeDomainVerify, queue.TypeDomainVerify},
	}
	for _, tc := range tests {
		t.Run(tc.opType, func(t *testing.T) {
			t.Parallel()
			op := &models.Operation{ID: "op_0123", TenantID: "ten_1", Type: tc.opType}
			task, spec, err := queue.TaskForOperation(op)
			if err != nil {
				t.Fatal(err)
			}
			if task.Type() != tc.taskType {
				t.Errorf("type = %q, want %q", task.Type(), tc.taskType)
			}
			if spec.Queue != queue.QueueDefault || spec.MaxRetry < 1 || spec.Timeout < time.Minute {
				t.Errorf("spec = %+v", spec)
			}
			p, err := queue.DecodeOperationPayload(task.Payload())
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(queue.OperationPayload{OperationID: "op_0123", TenantID: "ten_1"}, p); diff != "" {
				t.Errorf("payload (-want +got):\n%s", diff)
			}
		})
	}
	if _, _, err := queue.TaskForOperation(&models.Operation{ID: "op_1", Type: "site.explode"}); err == nil {
		t.Error("unknown operation type: no error")
	}
}

// Task type names are on the wire: changing one strands every queued task.
func TestTaskTypeNamesAreStable(t *testing.T) {
	t.Parallel()
	got := []string{queue.TypeSiteProvision, queue.TypeSiteDeprovision, queue.TypeOperationsReconcile, queue.TypeDomainVerify}
	want := []string{"site:provision", "site:deprovision", "operations:reconcile", "domain:verify"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("task type names changed (-shipped +now):\n%s", diff)
	}
}

func TestDecodeOperationPayloadRejectsBadPayloads(t *testing.T) {
	t.Parallel()
	for _, raw := range []string{``, `{`, `[]`, `{}`, `{"operation_id":"op_1"}`, `{"tenant_id":"t"}`, `{"operation_id":5}`} {
		_, err := queue.DecodeOperationPayload([]byte(raw))
		if !errors.Is(err, queue.ErrBadPayload) || !errors.Is(err, asynq.SkipRetry) {
			t.Errorf("%q: err = %v, want ErrBadPayload wrapping SkipRetry", raw, err)
		}
	}
}

func TestWeightsFavourCritical(t *testing.T) {
	t.Parallel()
	w := queue.Weights()
	if !(w[queue.QueueCritical] > w[queue.QueueDefault] && w[queue.QueueDefault] > w[queue.QueueLow] && w[queue.QueueLow] > 0) {
		t.Errorf("weights = %v", w)
	}
}
