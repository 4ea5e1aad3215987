package deploycheck

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/chomhq/chom/internal/stack"
)

// eventPoolConns is the most database connections the relay and the billing
// consumer open, whatever CHOM_DB_MAX_CONNS says (internal/stack/relay.go).
const eventPoolConns = 4

// PoolShare is one workload's share of the PostgreSQL connection budget at its
// largest scale.
type PoolShare struct {
	Workload string
	Pods     int // replicas, or the autoscaler's maximum
	PerPod   int // the process's pool: CHOM_DB_MAX_CONNS (4 for relay and billing, 0 for the scheduler)
}

// ConnectionBudget is the most PostgreSQL connections a build's chom pods can
// open at once: for each Deployment its most pods (an HPA's maxReplicas or a
// ScaledObject's maxReplicaCount when one scales it, else replicas) times its
// pool, plus the migration Job's. CHOM_DB_MAX_CONNS × processes must stay
// under the server's max_connections (docs/operations.md, Scaling out).
func ConnectionBudget(objs []Object) (total int, shares []PoolShare, err error) {
	configMaps := map[string]map[string]string{}
	maxPods := map[string]int{}
	for _, o := range objs {
		switch t := o.Typed.(type) {
		case *corev1.ConfigMap:
			configMaps[t.Name] = t.Data
		case *autoscalingv2.HorizontalPodAutoscaler:
			maxPods[t.Spec.ScaleTargetRef.Name] = int(t.Spec.MaxReplicas)
		}
		if o.Kind == "ScaledObject" {
			var so struct {
				Spec struct {
					ScaleTargetRef  struct{ Name string }
					MaxReplicaCount *int
				}
			}
			if err := yaml.Unmarshal(o.YAML, &so); err != nil {
				return 0, nil, fmt.Errorf("%s %s: %w", o.Kind, o.Name, err)
			}
			n := 100 // KEDA's default maxReplicaCount
			if so.Spec.MaxReplicaCount != nil {
				n = *so.Spec.MaxReplicaCount
			}
			maxPods[so.Spec.ScaleTargetRef.Name] = n
		}
	}
	for _, o := range objs {
		var spec *corev1.PodSpec
		pods := 1
		switch t := o.Typed.(type) {
		case *appsv1.Deployment:
			spec = &t.Spec.Template.Spec
			if t.Spec.Replicas != nil {
				pods = int(*t.Spec.Replicas)
			}
			if n, ok := maxPods[t.Name]; ok {
				pods = n
			}
		case *batchv1.Job:
			spec = &t.Spec.Template.Spec
		default:
			continue
		}
		for _, c := range spec.Containers {
			if !isChomImage(c.Image) || len(c.Args) == 0 {
				continue
			}
			env := map[string]string{}
			for _, ef := range c.EnvFrom {
				if ef.ConfigMapRef != nil {
					for k, v := range configMaps[ef.ConfigMapRef.Name] {
						env[k] = v
					}
				}
			}
			for _, e := range c.Env {
				if e.ValueFrom == nil {
					env[e.Name] = e.Value
				}
			}
			per := 0
			for _, s := range stack.Settings() {
				if s.Env == "CHOM_DB_MAX_CONNS" {
					per, _ = strconv.Atoi(s.Default)
				}
			}
			if v, ok := env["CHOM_DB_MAX_CONNS"]; ok {
				if per, err = strconv.Atoi(v); err != nil {
					return 0, nil, fmt.Errorf("%s %s: CHOM_DB_MAX_CONNS=%q: %w", o.Kind, o.Name, v, err)
				}
			}
			switch c.Args[0] {
			case "relay", "billing-consumer":
				per = min(per, eventPoolConns)
			case "scheduler":
				per = 0
			}
			shares = append(shares, PoolShare{Workload: o.Kind + " " + o.Name, Pods: pods, PerPod: per})
			total += pods * per
		}
	}
	return total, shares, nil
}

// reservedConns is PostgreSQL's superuser_reserved_connections default: the
// connections max_connections keeps for administrators.
const reservedConns = 3

// MaxConnections reads max_connections from a postgresql.conf.
func MaxConnections(conf []byte) (int, error) {
	m := regexp.MustCompile(`(?m)^\s*max_connections\s*=\s*(\d+)`).FindSubmatch(conf)
	if m == nil {
		return 0, errors.New("postgresql.conf sets no max_connections")
	}
	return strconv.Atoi(string(m[1]))
}

// CheckBudget fails when a build at full scale could open more PostgreSQL
// connections than maxConns leaves to clients (reservedConns kept back): past
// that, scaling out makes new processes fail to connect instead of adding
// capacity.
func CheckBudget(objs []Object, maxConns int) error {
	total, shares, err := ConnectionBudget(objs)
	if err != nil {
		return err
	}
	if total > maxConns-reservedConns {
		var parts []string
		for _, s := range shares {
			parts = append(parts, fmt.Sprintf("%s %d×%d", s.Workload, s.Pods, s.PerPod))
		}
		return fmt.Errorf("at full scale the chom pods may open %d PostgreSQL connections (%s), more than the %d that max_connections=%d leaves",
			total, strings.Join(parts, ", "), maxConns-reservedConns, maxConns)
	}
	return nil
}
