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
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// Object is one manifest of a kustomize build: its kind, name, YAML, and the
// typed k8s.io/api object when its kind has one (nil for custom resources
// such as KEDA's ScaledObject).
type Object struct {
	APIVersion, Kind, Name string
	YAML                   []byte
	Typed                  runtime.Object
}

// Build runs `kustomize build dir` through kustomize's Go API (the loader
// restricted to the kustomization's own tree, as the CLI does) and returns
// its objects.
func Build(dir string) ([]Object, error) {
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	var out []Object
	for _, r := range m.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			return nil, fmt.Errorf("kustomize build %s: %s/%s: %w", dir, r.GetKind(), r.GetName(), err)
		}
		out = append(out, Object{APIVersion: r.GetApiVersion(), Kind: r.GetKind(), Name: r.GetName(), YAML: y})
	}
	return out, nil
}

// scheme knows the k8s.io/api groups CHOM's manifests use; a kind outside it
// (and not a custom resource checked elsewhere) is refused.
func newScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme,
		policyv1.AddToScheme, networkingv1.AddToScheme, autoscalingv2.AddToScheme, rbacv1.AddToScheme} {
		if err := add(s); err != nil {
			return nil, fmt.Errorf("k8s scheme: %w", err)
		}
	}
	return s, nil
}

// ErrUnknownKind is returned by DecodeStrict for a kind k8s.io/api has no
// type for.
var ErrUnknownKind = errors.New("no k8s.io/api type for this kind")

// DecodeStrict decodes every object into its k8s.io/api type with the
// apimachinery serializer in strict mode: an unknown or duplicated field, or a
// value of the wrong type, is an error naming the object. Objects whose kind
// k8s.io/api does not know are returned in unknown (their apiVersion/kind),
// for the caller to check against their own schema.
func DecodeStrict(objs []Object) (unknown []Object, err error) {
	s, err := newScheme()
	if err != nil {
		return nil, err
	}
	ser := kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, s, s, kjson.SerializerOptions{Yaml: true, Strict: true})
	var errs []error
	for i := range objs {
		o := &objs[i]
		gvk := schema.FromAPIVersionAndKind(o.APIVersion, o.Kind)
		if !s.Recognizes(gvk) {
			unknown = append(unknown, *o)
			continue
		}
		typed, _, err := ser.Decode(o.YAML, &gvk, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", o.Kind, o.Name, err))
			continue
		}
		o.Typed = typed
	}
	return unknown, errors.Join(errs...)
}

// toMap is o's YAML as a generic JSON-shaped map.
func (o Object) toMap() (map[string]any, error) {
	var m map[string]any
	if err := yaml.Unmarshal(o.YAML, &m); err != nil {
		return nil, fmt.Errorf("%s %s: %w", o.Kind, o.Name, err)
	}
	return m, nil
}
