package deploycheck

import (
	"errors"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// CheckSelectors reports selectors that select no pod of the build (a
// mistyped label makes a Service, a PodDisruptionBudget or a NetworkPolicy
// silently apply to nothing) and autoscalers whose target is not a Deployment
// of the build.
func CheckSelectors(objs []Object) error {
	var pods []labels.Set
	deployments := map[string]bool{}
	for _, o := range objs {
		switch t := o.Typed.(type) {
		case *appsv1.Deployment:
			deployments[t.Name] = true
			pods = append(pods, t.Spec.Template.Labels)
			sel, err := metav1.LabelSelectorAsSelector(t.Spec.Selector)
			if err != nil || !sel.Matches(labels.Set(t.Spec.Template.Labels)) {
				return fmt.Errorf("Deployment %s: its selector does not select its own pods", t.Name)
			}
		case *batchv1.Job:
			pods = append(pods, t.Spec.Template.Labels)
		}
	}
	matchesAny := func(sel labels.Selector) bool {
		for _, p := range pods {
			if sel.Matches(p) {
				return true
			}
		}
		return false
	}
	var errs []error
	check := func(kind, name string, ls *metav1.LabelSelector) {
		sel, err := metav1.LabelSelectorAsSelector(ls)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s %s: selector: %w", kind, name, err))
		case !matchesAny(sel):
			errs = append(errs, fmt.Errorf("%s %s: selector %s selects no pod of the build", kind, name, sel))
		}
	}
	for _, o := range objs {
		switch t := o.Typed.(type) {
		case *corev1.Service:
			check("Service", t.Name, &metav1.LabelSelector{MatchLabels: t.Spec.Selector})
		case *policyv1.PodDisruptionBudget:
			check("PodDisruptionBudget", t.Name, t.Spec.Selector)
		case *networkingv1.NetworkPolicy:
			check("NetworkPolicy", t.Name, &t.Spec.PodSelector)
		case *autoscalingv2.HorizontalPodAutoscaler:
			if r := t.Spec.ScaleTargetRef; r.Kind != "Deployment" || !deployments[r.Name] {
				errs = append(errs, fmt.Errorf("HorizontalPodAutoscaler %s: target %s %s is not a Deployment of the build", t.Name, r.Kind, r.Name))
			}
		}
	}
	return errors.Join(errs...)
}
