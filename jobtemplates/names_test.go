package jobtemplates

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/api/validate/content"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

func TestJobName(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("abcdef0123", 10)
	tests := []struct {
		id   string
		want string
	}{
		{"0b9f3c4e-6a51-4f2e-9d3b-5c1f7e2a8d10", "kiln-build-0b9f3c4e-6a51-4f2e-9d3b-5c1f7e2a8d10"},
		{"42", "kiln-build-42"},
		{"0B9F3C4E-6A51-4F2E-9D3B-5C1F7E2A8D10", "kiln-build-0b9f3c4e-6a51-4f2e-9d3b-5c1f7e2a8d10-" + hashOf("0B9F3C4E-6A51-4F2E-9D3B-5C1F7E2A8D10")},
		{"a_b", "kiln-build-a-b-" + hashOf("a_b")},
		{"-a-", "kiln-build-a-" + hashOf("-a-")},
		{long, "kiln-build-" + long[:52-11] + "-" + hashOf(long)},
		{"ü", "kiln-build-" + hashOf("ü")},
		{"", "kiln-build-" + hashOf("")},
	}
	for _, tt := range tests {
		got := JobName(tt.id)
		require.Equal(t, tt.want, got, "JobName(%q)", tt.id)
		require.Empty(t, content.IsDNS1123Label(got), "JobName(%q) = %q", tt.id, got)
		require.Empty(t, content.IsDNS1123Subdomain(SecretName(tt.id)))
		require.Equal(t, got+"-token", SecretName(tt.id))
	}
	// Ids that sanitise alike still get distinct names.
	require.NotEqual(t, JobName("a_b"), JobName("a-b"))
	require.NotEqual(t, JobName("A"), JobName("a"))
	require.NotEqual(t, JobName(long), JobName(long+"x"))
}

func TestLabelValue(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("Project.Name_", 8)
	tests := []struct {
		in   string
		want string
	}{
		{"", ""},
		{"web-shop", "web-shop"},
		{"Web.Shop_2", "Web.Shop_2"},
		{"web shop", "web-shop-" + hashOf("web shop")},
		{"_private", "private-" + hashOf("_private")},
		{"kilnbuild/kiln", "kilnbuild-kiln-" + hashOf("kilnbuild/kiln")},
		{"日本", hashOf("日本")},
		{long, long[:51] + "-" + hashOf(long)}, // the cut ends in "_", trimmed
	}
	for _, tt := range tests {
		got := LabelValue(tt.in)
		require.Equal(t, tt.want, got, "LabelValue(%q)", tt.in)
		require.Empty(t, content.IsLabelValue(got), "LabelValue(%q) = %q", tt.in, got)
	}
}

func TestSelectors(t *testing.T) {
	t.Parallel()
	in := setup(t)
	job, secret, err := Render(in)
	require.NoError(t, err)
	require.Equal(t, "app.kubernetes.io/managed-by=kiln", Selector().String())
	for _, obj := range []metav1.Object{job, &job.Spec.Template, secret} {
		require.True(t, Selector().Matches(labels.Set(obj.GetLabels())))
		require.True(t, BuildSelector(testBuildID).Matches(labels.Set(obj.GetLabels())))
		require.False(t, BuildSelector("other").Matches(labels.Set(obj.GetLabels())))
		id, ok := BuildIDOf(obj)
		require.True(t, ok)
		require.Equal(t, testBuildID, id)
	}

	// Without the annotation the label is used; without managed-by, nothing.
	job.Annotations = nil
	id, ok := BuildIDOf(job)
	require.True(t, ok)
	require.Equal(t, testBuildID, id)
	delete(job.Labels, LabelManagedBy)
	_, ok = BuildIDOf(job)
	require.False(t, ok)
}
