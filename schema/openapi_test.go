package schema_test

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/kilnbuild/kiln/schema"
)

type openAPIDoc struct {
	Components struct {
		Schemas map[string]struct {
			Enum       []string `json:"enum"`
			Required   []string `json:"required"`
			Properties map[string]struct {
				Enum []string `json:"enum"`
			} `json:"properties"`
		} `json:"schemas"`
	} `json:"components"`
}

// openapi.yaml declares what schema declares: every reason, every event
// type, and every payload's and result's fields with the same required set.
func TestOpenAPIMatchesSchema(t *testing.T) {
	t.Parallel()
	var doc openAPIDoc
	if err := yaml.Unmarshal(schema.OpenAPI, &doc); err != nil {
		t.Fatal(err)
	}
	s := doc.Components.Schemas
	var reasons []string
	for _, r := range schema.Reasons {
		reasons = append(reasons, string(r))
	}
	if !sameSet(s["Reason"].Enum, reasons) {
		t.Errorf("Reason enum %v, schema.Reasons %v", s["Reason"].Enum, reasons)
	}
	var types []string
	for _, typ := range schema.EventTypes {
		types = append(types, string(typ))
	}
	if got := s["Event"].Properties["type"].Enum; !sameSet(got, types) {
		t.Errorf("Event.type enum %v, schema.EventTypes %v", got, types)
	}
	for name, v := range map[string]any{
		"AgentTextPayload": schema.AgentTextPayload{}, "ToolCallPayload": schema.ToolCallPayload{},
		"ToolResultPayload": schema.ToolResultPayload{}, "UsagePayload": schema.UsagePayload{},
		"GitPayload": schema.GitPayload{}, "LogPayload": schema.LogPayload{}, "InfoPayload": schema.InfoPayload{},
		"AgentRetryPayload": schema.AgentRetryPayload{}, "PermissionDeniedPayload": schema.PermissionDeniedPayload{},
		"BuildResult": schema.BuildResult{}, "PermissionDenial": schema.PermissionDenial{}, "Usage": schema.Usage{},
	} {
		decl, ok := s[name]
		if !ok {
			t.Errorf("openapi.yaml has no %s", name)
			continue
		}
		fields, required := jsonFields(reflect.TypeOf(v))
		var props []string
		for p := range decl.Properties {
			props = append(props, p)
		}
		if !sameSet(props, fields) {
			t.Errorf("%s: openapi properties %v, Go fields %v", name, props, fields)
		}
		if !sameSet(decl.Required, required) && name != "Usage" {
			t.Errorf("%s: openapi required %v, Go fields without omitempty %v", name, decl.Required, required)
		}
	}
}

func jsonFields(t reflect.Type) (all, required []string) {
	for i := range t.NumField() {
		name, opts, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		all = append(all, name)
		if !strings.Contains(opts, "omitempty") {
			required = append(required, name)
		}
	}
	return all, required
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
