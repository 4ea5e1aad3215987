package deploycheck

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/prometheus/promql/parser"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"sigs.k8s.io/yaml"
)

// KEDA is the KEDA release whose CRD schemas the ScaledObject is checked
// against, and KEDASum the go.sum hash of that module's zip: the schema read
// from the module cache is the one KEDA tagged, not a copy kept here.
const (
	KEDAModule  = "github.com/kedacore/keda/v2"
	KEDAVersion = "v2.18.0"
	KEDASum     = "h1:ttR223fii/4QJ0YvtrhcWHaEoezByb/t5CeFopjl6EI="
)

// DownloadKEDA fetches the KEDA module through the Go module proxy (or finds
// it in the module cache) with `go mod download -json`, run outside this
// module so go.mod and go.sum stay as they are, and returns its directory.
// The go command checks the zip against the checksum database; the hash it
// reports must also be KEDASum.
func DownloadKEDA(ctx context.Context) (string, error) {
	tmp, err := os.MkdirTemp("", "deploycheck-keda-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", KEDAModule+"@"+KEDAVersion)
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GO111MODULE=on")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go mod download %s@%s: %w\n%s%s", KEDAModule, KEDAVersion, err, out, stderr.String())
	}
	var m struct{ Dir, Sum, Error string }
	if err := json.Unmarshal(out, &m); err != nil {
		return "", fmt.Errorf("go mod download -json: %w", err)
	}
	switch {
	case m.Error != "":
		return "", fmt.Errorf("go mod download %s@%s: %s", KEDAModule, KEDAVersion, m.Error)
	case m.Sum != KEDASum:
		return "", fmt.Errorf("go mod download %s@%s: hash %s, want %s", KEDAModule, KEDAVersion, m.Sum, KEDASum)
	}
	return m.Dir, nil
}

// CRDSchema is a custom resource's openAPIV3Schema, compiled as a JSON Schema
// that refuses unknown fields the way `kubectl apply --validate=strict`
// (server-side field validation) does: every object schema with properties and
// without x-kubernetes-preserve-unknown-fields allows no others.
type CRDSchema struct {
	Group, Kind, Version string
	schema               *jsonschema.Schema
}

// LoadCRD reads a CustomResourceDefinition file and compiles the schema of
// its version.
func LoadCRD(path, version string) (*CRDSchema, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var crd struct {
		Spec struct {
			Group string
			Names struct{ Kind string }
			// Versions keep their schemas as raw JSON: the strict rewrite
			// works on maps.
			Versions []struct {
				Name   string
				Schema struct {
					OpenAPIV3Schema map[string]any `json:"openAPIV3Schema"`
				}
			}
		}
	}
	if err := yaml.Unmarshal(raw, &crd); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, v := range crd.Spec.Versions {
		if v.Name != version {
			continue
		}
		if v.Schema.OpenAPIV3Schema == nil {
			return nil, fmt.Errorf("%s: version %s has no openAPIV3Schema", path, version)
		}
		strictSchema(v.Schema.OpenAPIV3Schema)
		doc, err := json.Marshal(v.Schema.OpenAPIV3Schema)
		if err != nil {
			return nil, err
		}
		inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
		if err != nil {
			return nil, err
		}
		c := jsonschema.NewCompiler()
		c.DefaultDraft(jsonschema.Draft4) // OpenAPI 3.0 schemas are draft-4 shaped
		url := "file://" + filepath.ToSlash(path) + "." + version + ".json"
		if err := c.AddResource(url, inst); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		s, err := c.Compile(url)
		if err != nil {
			return nil, fmt.Errorf("%s: compile %s schema: %w", path, version, err)
		}
		return &CRDSchema{Group: crd.Spec.Group, Kind: crd.Spec.Names.Kind, Version: version, schema: s}, nil
	}
	return nil, fmt.Errorf("%s: no version %s", path, version)
}

// strictSchema closes every object schema that lists its properties.
func strictSchema(s map[string]any) {
	if props, ok := s["properties"].(map[string]any); ok {
		if _, set := s["additionalProperties"]; !set && s["x-kubernetes-preserve-unknown-fields"] != true {
			s["additionalProperties"] = false
		}
		for _, p := range props {
			if m, ok := p.(map[string]any); ok {
				strictSchema(m)
			}
		}
	}
	for _, k := range []string{"items", "additionalProperties"} {
		if m, ok := s[k].(map[string]any); ok {
			strictSchema(m)
		}
	}
	for _, k := range []string{"anyOf", "allOf", "oneOf"} {
		if l, ok := s[k].([]any); ok {
			for _, e := range l {
				if m, ok := e.(map[string]any); ok {
					strictSchema(m)
				}
			}
		}
	}
}

// Validate checks one object against the schema.
func (c *CRDSchema) Validate(o Object) error {
	j, err := yaml.YAMLToJSON(o.YAML)
	if err != nil {
		return fmt.Errorf("%s %s: %w", o.Kind, o.Name, err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
	if err != nil {
		return fmt.Errorf("%s %s: %w", o.Kind, o.Name, err)
	}
	if err := c.schema.Validate(inst); err != nil {
		return fmt.Errorf("%s %s does not match KEDA's %s schema: %w", o.Kind, o.Name, c.Version, err)
	}
	return nil
}

// ScalerKeys lists the trigger metadata keys a KEDA scaler reads, from the
// `keda:"name=…"` tags of its metadata struct in the KEDA source
// (pkg/scalers/<scaler>_scaler.go): the CRD leaves trigger metadata a free map
// of strings, so a misspelled key would pass it and be ignored by KEDA.
func ScalerKeys(kedaDir, scaler string) ([]string, error) {
	src, err := os.ReadFile(filepath.Join(kedaDir, "pkg", "scalers", scaler+"_scaler.go"))
	if err != nil {
		return nil, fmt.Errorf("KEDA scaler %q: %w", scaler, err)
	}
	var keys []string
	for _, m := range regexp.MustCompile(`keda:"name=([A-Za-z0-9]+)`).FindAllSubmatch(src, -1) {
		keys = append(keys, string(m[1]))
	}
	if len(keys) == 0 {
		return nil, errors.New("KEDA scaler " + scaler + ": no keda:\"name=…\" tags found")
	}
	slices.Sort(keys)
	return slices.Compact(keys), nil
}

// ScaledObjectRules is what CheckScaledObjects checks a ScaledObject against
// besides its schema.
type ScaledObjectRules struct {
	// ScalerKeys are the metadata keys each trigger type's scaler reads
	// (ScalerKeys); a trigger of another type is refused.
	ScalerKeys map[string][]string
	// Metrics are the metric families CHOM registers (metrics.New().Names()):
	// a Prometheus trigger's query may name no other.
	Metrics []string
}

// CheckScaledObjects validates every ScaledObject of a build against the
// schema and rules: the target is a Deployment of the build, each trigger's
// metadata keys are ones its scaler reads, a Prometheus query parses and
// names only metrics CHOM exports, and its threshold is a number.
func (c *CRDSchema) CheckScaledObjects(objs []Object, rules ScaledObjectRules) error {
	deployments := map[string]bool{}
	for _, o := range objs {
		if o.Kind == "Deployment" {
			deployments[o.Name] = true
		}
	}
	var errs []error
	for _, o := range objs {
		if o.Kind != c.Kind {
			continue
		}
		if err := c.Validate(o); err != nil {
			errs = append(errs, err)
			continue
		}
		var so struct {
			Spec struct {
				ScaleTargetRef struct{ Kind, Name string }
				Triggers       []struct {
					Type     string
					Metadata map[string]string
				}
			}
		}
		if err := yaml.Unmarshal(o.YAML, &so); err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", o.Kind, o.Name, err))
			continue
		}
		if t := so.Spec.ScaleTargetRef; (t.Kind != "" && t.Kind != "Deployment") || !deployments[t.Name] {
			errs = append(errs, fmt.Errorf("%s %s: scaleTargetRef %s %q is not a Deployment of the build", o.Kind, o.Name, t.Kind, t.Name))
		}
		for i, tr := range so.Spec.Triggers {
			keys, ok := rules.ScalerKeys[tr.Type]
			if !ok {
				errs = append(errs, fmt.Errorf("%s %s: trigger %d: type %q is not checked here", o.Kind, o.Name, i, tr.Type))
				continue
			}
			for k := range tr.Metadata {
				if !slices.Contains(keys, k) {
					errs = append(errs, fmt.Errorf("%s %s: trigger %d: the %s scaler reads no %q (it reads %s)", o.Kind, o.Name, i, tr.Type, k, strings.Join(keys, ", ")))
				}
			}
			if tr.Type == "prometheus" {
				errs = append(errs, checkPromTrigger(tr.Metadata, rules.Metrics))
			}
		}
	}
	return errors.Join(errs...)
}

func checkPromTrigger(md map[string]string, known []string) error {
	var errs []error
	if _, err := strconv.ParseFloat(md["threshold"], 64); err != nil {
		errs = append(errs, fmt.Errorf("prometheus trigger: threshold %q: %w", md["threshold"], err))
	}
	expr, err := parser.ParseExpr(md["query"])
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("prometheus trigger: query: %w", err))...)
	}
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok && !slices.Contains(known, vs.Name) {
			errs = append(errs, fmt.Errorf("prometheus trigger: query names %s, which CHOM does not export", vs.Name))
		}
		return nil
	})
	return errors.Join(errs...)
}
