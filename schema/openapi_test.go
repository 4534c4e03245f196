package schema_test

import (
	"context"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"sigs.k8s.io/yaml"

	"github.com/kilnbuild/kiln/schema"
)

type openAPIProperty struct {
	Ref       string   `json:"$ref"`
	Enum      []string `json:"enum"`
	WriteOnly bool     `json:"writeOnly"`
	Items     struct {
		Ref string `json:"$ref"`
	} `json:"items"`
}

type openAPISchema struct {
	Enum       []string                   `json:"enum"`
	Required   []string                   `json:"required"`
	WriteOnly  bool                       `json:"writeOnly"`
	Properties map[string]openAPIProperty `json:"properties"`
}

type openAPIDoc struct {
	Components struct {
		Schemas map[string]openAPISchema `json:"schemas"`
	} `json:"components"`
}

func loadOpenAPI(t *testing.T) map[string]openAPISchema {
	t.Helper()
	var doc openAPIDoc
	if err := yaml.Unmarshal(schema.OpenAPI, &doc); err != nil {
		t.Fatal(err)
	}
	return doc.Components.Schemas
}

// openapi.yaml is a valid OpenAPI document (the API's tests route and check
// real responses with it).
func TestOpenAPIValid(t *testing.T) {
	t.Parallel()
	doc, err := openapi3.NewLoader().LoadFromData(schema.OpenAPI)
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func strs[T ~string](vs []T) []string {
	var out []string
	for _, v := range vs {
		out = append(out, string(v))
	}
	return out
}

// openapi.yaml declares what schema declares: every reason, event type,
// project status and step status, and every payload's, result's and
// project's fields with the same required set.
func TestOpenAPIMatchesSchema(t *testing.T) {
	t.Parallel()
	s := loadOpenAPI(t)
	for name, want := range map[string][]string{
		"Reason":        strs(schema.Reasons),
		"ProjectStatus": strs(schema.ProjectStatuses),
		"StepStatus":    strs(schema.StepStatuses),
		"WaitingReason": strs(schema.WaitingReasons),
	} {
		if !sameSet(s[name].Enum, want) {
			t.Errorf("%s enum %v, schema declares %v", name, s[name].Enum, want)
		}
	}
	if got := s["Event"].Properties["type"].Enum; !sameSet(got, strs(schema.EventTypes)) {
		t.Errorf("Event.type enum %v, schema.EventTypes %v", got, schema.EventTypes)
	}
	if got, want := s["Repository"].Properties["credentials"].Enum, []string{schema.CredentialsHTTPS, schema.CredentialsSSH}; !sameSet(got, want) {
		t.Errorf("Repository.credentials enum %v, Go kinds %v", got, want)
	}
	for schemaName, props := range map[string]map[string]string{
		"Project":          {"status": "ProjectStatus", "repository": "Repository", "workspace": "Workspace", "provisioning": "Provisioning"},
		"ProvisioningStep": {"status": "StepStatus"},
		"ProjectInput":     {"repository": "RepositoryInput", "workspace": "WorkspaceInput"},
		"RepositoryInput":  {"credentials": "Credentials"},
		"CreateAndBuild":   {"project": "ProjectInput", "build": "BuildSpec"},
	} {
		for prop, want := range props {
			if got := s[schemaName].Properties[prop].Ref; got != "#/components/schemas/"+want {
				t.Errorf("%s.%s is %q, want a $ref to %s", schemaName, prop, got, want)
			}
		}
	}
	for name, v := range map[string]any{
		"AgentTextPayload": schema.AgentTextPayload{}, "ToolCallPayload": schema.ToolCallPayload{},
		"ToolResultPayload": schema.ToolResultPayload{}, "UsagePayload": schema.UsagePayload{},
		"GitPayload": schema.GitPayload{}, "LogPayload": schema.LogPayload{}, "InfoPayload": schema.InfoPayload{},
		"AgentRetryPayload": schema.AgentRetryPayload{}, "PermissionDeniedPayload": schema.PermissionDeniedPayload{},
		"BuildResult": schema.BuildResult{}, "PermissionDenial": schema.PermissionDenial{}, "Usage": schema.Usage{},
		"Project": schema.Project{}, "ProjectInput": schema.ProjectInput{}, "CreateAndBuild": schema.CreateAndBuild{},
		"RepositoryInput": schema.RepositoryInput{}, "Credentials": schema.Credentials{},
		"WorkspaceInput": schema.WorkspaceInput{}, "Resources": schema.Resources{}, "AddonInput": schema.AddonInput{},
		"Repository": schema.Repository{}, "Workspace": schema.Workspace{}, "Addon": schema.Addon{},
		"Provisioning": schema.Provisioning{}, "ProvisioningStep": schema.ProvisioningStep{},
		"BuildSpec": schema.BuildSpec{}, "Build": schema.Build{}, "BuildSummary": schema.BuildSummary{},
		"ProjectSpend": schema.ProjectSpend{},
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
		if !sameSet(decl.Required, required) && name != "Usage" && name != "BuildSpec" { // a request may leave out auto_commit and auto_push
			t.Errorf("%s: openapi required %v, Go fields without omitempty %v", name, decl.Required, required)
		}
	}
}

// Secrets go in and never come out: the credential and secret_env fields are
// writeOnly, and nothing a response shows of a project (the Project schema
// and every schema it reaches) declares one of them.
func TestOpenAPIProjectSecrets(t *testing.T) {
	t.Parallel()
	s := loadOpenAPI(t)
	for _, f := range [][2]string{{"Credentials", "token"}, {"Credentials", "ssh_private_key"},
		{"Credentials", "known_hosts"}, {"WorkspaceInput", "secret_env"}} {
		if !s[f[0]].Properties[f[1]].WriteOnly {
			t.Errorf("%s.%s is not writeOnly", f[0], f[1])
		}
	}
	secret := []string{"token", "ssh_private_key", "known_hosts", "secret_env", "password"}
	seen := map[string]bool{}
	var walk func(name, path string)
	walk = func(name, path string) {
		if seen[name] {
			return
		}
		seen[name] = true
		decl, ok := s[name]
		if !ok {
			t.Errorf("%s: no schema %s", path, name)
			return
		}
		for p, prop := range decl.Properties {
			if slices.Contains(secret, p) || prop.WriteOnly {
				t.Errorf("%s.%s: a secret in a response", path, p)
			}
			for _, ref := range []string{prop.Ref, prop.Items.Ref} {
				if ref, ok := strings.CutPrefix(ref, "#/components/schemas/"); ok {
					walk(ref, path+"."+p)
				}
			}
		}
	}
	walk("Project", "Project")
	for _, want := range []string{"Repository", "Workspace", "Addon", "Provisioning", "ProvisioningStep", "Resources"} {
		if !seen[want] {
			t.Errorf("Project does not reach %s", want)
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
