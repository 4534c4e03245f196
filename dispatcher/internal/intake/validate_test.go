package intake_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/intake"
	"github.com/kilnbuild/kiln/jobtemplates"
	"github.com/kilnbuild/kiln/schema"
)

func fields(t *testing.T, err error) map[string]string {
	t.Helper()
	var v intake.ValidationError
	require.True(t, errors.As(err, &v), "%v", err)
	out := map[string]string{}
	for _, fe := range v {
		out[fe.Field] = fe.Rule
	}
	return out
}

// Text Postgres cannot store is refused naming the field, whoever calls
// intake (the API's decoder refuses it earlier, the CLI does not have one).
func TestValidateSpecRefusesNUL(t *testing.T) {
	t.Parallel()
	const nul = "must not contain NUL (U+0000)"
	for field, spec := range map[string]schema.BuildSpec{
		"build.prompt":        {Prompt: "a\x00"},
		"build.template":      {Prompt: "x", Template: "default\x00"},
		"build.variables.who": {Prompt: "x", Variables: map[string]string{"who": "\x00"}},
		"build.variables":     {Prompt: "x", Variables: map[string]string{"w\x00": "a"}},
		"build.callback_url":  {Prompt: "x", CallbackURL: "https://h/\x00"},
	} {
		err := intake.ValidateSpec(&spec, jobtemplates.Embedded(), "build.")
		got := fields(t, err)
		assert.Contains(t, got[field], nul, field)
	}
}

func TestValidateSpecCallbackPort(t *testing.T) {
	t.Parallel()
	for raw, ok := range map[string]bool{
		"https://h/cb": true, "https://h:1/cb": true, "https://h:65535/cb": true, "http://[::1]:8080/cb": true,
		"https://h:0/cb": false, "https://h:65536/cb": false, "https://h:99999/cb": false, "https://h:8o/cb": false,
		"https://h:-1/cb": false, "http://[::1]:99999/cb": false, "https://h:00000000000000000080/cb": true,
	} {
		err := intake.ValidateSpec(&schema.BuildSpec{Prompt: "x", CallbackURL: raw}, jobtemplates.Embedded(), "")
		if ok {
			assert.NoError(t, err, raw)
			continue
		}
		assert.Equal(t, "the port must be a number from 1 to 65535", fields(t, err)["callback_url"], raw)
	}
}

func TestNormalizeProjectRefusesNUL(t *testing.T) {
	t.Parallel()
	for field, in := range map[string]schema.ProjectInput{
		"name":                {Name: "w\x00"},
		"namespace":           {Name: "w", Namespace: "d\x00"},
		"pod_name":            {Name: "w", PodName: "p\x00"},
		"pod_selector":        {Name: "w", PodSelector: "a=\x00"},
		"container":           {Name: "w", Container: "\x00"},
		"workdir":             {Name: "w", Workdir: "/w\x00"},
		"git_remote":          {Name: "w", GitRemote: "o\x00"},
		"git_branch":          {Name: "w", GitBranch: "m\x00"},
		"commit_author_name":  {Name: "w", AuthorName: "K\x00"},
		"commit_author_email": {Name: "w", AuthorEmail: "k@h\x00"},
	} {
		p, err := intake.NormalizeProject(in, "project.")
		assert.Nil(t, p, field)
		assert.Equal(t, map[string]string{"project." + field: "must not contain NUL (U+0000)"}, fields(t, err), field)
	}
}
