package loadtest

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestScenariosShape(t *testing.T) {
	t.Parallel()
	type shape struct {
		Name        string
		Users       []int
		Total       time.Duration
		StopOnBreak bool
	}
	var got []shape
	for _, s := range Scenarios() {
		if err := s.Validate(); err != nil {
			t.Errorf("%s: %v", s.Name, err)
		}
		var users []int
		for _, st := range s.Stages {
			users = append(users, st.Users)
		}
		got = append(got, shape{s.Name, users, s.Duration(), s.StopOnBreak})
	}
	want := []shape{
		{ScenarioRampUp, []int{10, 50, 100}, 15 * time.Minute, false},
		{ScenarioSustained, []int{100}, 10 * time.Minute, false},
		{ScenarioSpike, []int{100, 200, 100}, 5 * time.Minute, false},
		{ScenarioSoak, []int{100}, time.Hour, false},
		{ScenarioStress, []int{50, 100, 150, 200, 250, 300, 350, 400, 450, 500}, 17 * time.Minute, true},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("scenarios (-want +got):\n%s", d)
	}
}

func TestScaled(t *testing.T) {
	t.Parallel()
	spike := Scenarios()[2]
	tests := []struct {
		name  string
		scale float64
		want  []Stage
	}{
		{"full length", 1, []Stage{{100, 2 * time.Minute}, {200, time.Minute}, {100, 2 * time.Minute}}},
		{"CI length", 0.05, []Stage{{100, 6 * time.Second}, {200, 3 * time.Second}, {100, 6 * time.Second}}},
		{"rounded to the millisecond", 0.0123, []Stage{{100, 1476 * time.Millisecond}, {200, MinStageDuration}, {100, 1476 * time.Millisecond}}},
		{"never below a second", 0.001, []Stage{{100, MinStageDuration}, {200, MinStageDuration}, {100, MinStageDuration}}},
		{"longer", 2, []Stage{{100, 4 * time.Minute}, {200, 2 * time.Minute}, {100, 4 * time.Minute}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := spike.Scaled(tt.scale)
			if d := cmp.Diff(tt.want, got.Stages); d != "" {
				t.Errorf("stages (-want +got):\n%s", d)
			}
			if got.Name != spike.Name || got.PeakUsers() != 200 {
				t.Errorf("scaled scenario is %s with peak %d", got.Name, got.PeakUsers())
			}
		})
	}
	if spike.Stages[0].Duration != 2*time.Minute {
		t.Error("Scaled changed the original's stages")
	}
}

func TestValidateScale(t *testing.T) {
	t.Parallel()
	for _, f := range []float64{0.001, 0.05, 1, 100} {
		if err := ValidateScale(f); err != nil {
			t.Errorf("ValidateScale(%v) = %v", f, err)
		}
	}
	for _, f := range []float64{0, -1, 100.5} {
		if err := ValidateScale(f); err == nil {
			t.Errorf("ValidateScale(%v) = nil, want an error", f)
		}
	}
}

func TestLookup(t *testing.T) {
	t.Parallel()
	names := func(ss []Scenario) []string {
		var out []string
		for _, s := range ss {
			out = append(out, s.Name)
		}
		return out
	}
	all, err := Lookup("all")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"ramp-up", "sustained", "spike", "soak", "stress"}, names(all)); d != "" {
		t.Errorf("all (-want +got):\n%s", d)
	}
	some, err := Lookup("stress, spike")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"stress", "spike"}, names(some)); d != "" {
		t.Errorf("list (-want +got):\n%s", d)
	}
	for _, bad := range []string{"", "burst", "spike,burst"} {
		if _, err := Lookup(bad); err == nil || !strings.Contains(err.Error(), "known: all, ramp-up") {
			t.Errorf("Lookup(%q) = %v, want an error listing the scenarios", bad, err)
		}
	}
}

func TestScenarioValidate(t *testing.T) {
	t.Parallel()
	bad := Scenario{Name: "x", Stages: []Stage{{Users: -1, Duration: time.Second}, {Users: 1}}}
	err := bad.Validate()
	if err == nil || !strings.Contains(err.Error(), "-1 users") || !strings.Contains(err.Error(), "duration 0s") {
		t.Errorf("Validate = %v", err)
	}
	if err := (Scenario{Name: "empty"}).Validate(); err == nil {
		t.Error("a scenario without stages validated")
	}
}
