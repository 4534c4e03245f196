package jobtemplates

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Labels and annotations on every Job, pod template and Secret Kiln creates.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "kiln" // the value of LabelManagedBy
	LabelBuildID   = "kiln.dev/build-id"
	LabelProject   = "kiln.dev/project"    // the project's name, sanitised to a label value
	LabelProjectID = "kiln.dev/project-id" // the project's id, sanitised to a label value
	LabelTemplate  = "kiln.dev/template"

	// AnnotationBuildID holds the build id verbatim, in case the label had to
	// be sanitised; BuildIDOf reads it.
	AnnotationBuildID = "kiln.dev/build-id"
	// AnnotationProject holds the project's name verbatim.
	AnnotationProject = "kiln.dev/project"
)

// ContainerName is the name of the runner's container in the Job's pod.
const ContainerName = "jobrunner"

// SecretKeyRunnerToken is the key of the runner token in the build's Secret.
const SecretKeyRunnerToken = "runner-token"

const (
	jobPrefix    = "kiln-build-"
	secretSuffix = "-token"
	hashLen      = 10
	maxLabel     = 63
)

// JobName returns the name of the build's Job: "kiln-build-<id>" when the id
// is already lower-case letters, digits and '-' (a UUID is), otherwise the id
// sanitised and suffixed with a hash of the original, so that distinct ids
// never share a name. The result is a DNS-1123 label of at most 63 characters.
func JobName(buildID string) string {
	return jobPrefix + sanitize(buildID, maxLabel-len(jobPrefix), true)
}

// SecretName returns the name of the build's Secret holding its runner token.
func SecretName(buildID string) string {
	return JobName(buildID) + secretSuffix
}

// LabelValue turns s into a valid label value (at most 63 characters of
// letters, digits, '-', '_' and '.', beginning and ending with a letter or
// digit). Values that need changing get a hash of the original appended, so
// distinct inputs stay distinct.
func LabelValue(s string) string {
	if s == "" {
		return ""
	}
	return sanitize(s, maxLabel, false)
}

// Selector selects every Job, pod and Secret Kiln manages, for informers.
func Selector() labels.Selector {
	return labels.SelectorFromValidatedSet(labels.Set{LabelManagedBy: ManagedBy})
}

// BuildSelector selects the objects of one build.
func BuildSelector(buildID string) labels.Selector {
	return labels.SelectorFromValidatedSet(labels.Set{LabelManagedBy: ManagedBy, LabelBuildID: LabelValue(buildID)})
}

// BuildIDOf returns the build id of an object Render made (a Job, its pods or
// its Secret), from its annotation or, failing that, its label.
func BuildIDOf(obj metav1.Object) (string, bool) {
	if obj.GetLabels()[LabelManagedBy] != ManagedBy {
		return "", false
	}
	if id := obj.GetAnnotations()[AnnotationBuildID]; id != "" {
		return id, true
	}
	id, ok := obj.GetLabels()[LabelBuildID]
	return id, ok && id != ""
}

// sanitize keeps s when it is already valid (for DNS, lower-case letters,
// digits and '-'; for labels also upper-case, '_' and '.'), begins and ends
// with an alphanumeric and fits in max; otherwise it maps invalid characters
// to '-', trims, truncates and appends "-" and a hash of s.
func sanitize(s string, max int, dns bool) string {
	valid := func(r rune) bool {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-':
			return true
		case dns:
			return false
		default:
			return r >= 'A' && r <= 'Z' || r == '_' || r == '.'
		}
	}
	alnum := func(b byte) bool {
		return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9'
	}
	clean := s != "" && len(s) <= max && alnum(s[0]) && alnum(s[len(s)-1])
	for _, r := range s {
		if !clean {
			break
		}
		clean = valid(r)
	}
	if clean {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case dns && r >= 'A' && r <= 'Z':
			b.WriteRune(r + ('a' - 'A'))
		case valid(r):
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	sum := sha256.Sum256([]byte(s))
	hash := hex.EncodeToString(sum[:])[:hashLen]
	body := b.String()
	if keep := max - hashLen - 1; len(body) > keep {
		body = body[:keep]
	}
	body = strings.TrimFunc(body, func(r rune) bool { return !alnum(byte(r)) || r > 127 })
	if body == "" {
		return hash
	}
	return body + "-" + hash
}

// A managed project's repository credentials, kept in the builds namespace
// in the Secret ProjectSecretName(project id) (the dispatcher writes it when
// the project is created). A build Job of a project with credentials mounts
// the keys of its kind (git-username and git-token, or ssh-private-key and
// known-hosts) read-only at GitCredentialsDir, so the runner can fetch and
// push; the workspace pod never holds them outside its clone init container.
const (
	SecretKeyGitUsername = "git-username"
	SecretKeyGitToken    = "git-token"
	SecretKeySSHKey      = "ssh-private-key"
	SecretKeyKnownHosts  = "known-hosts"
	// SecretKeyEnvPrefix prefixes each secret_env variable's key in that Secret.
	SecretKeyEnvPrefix = "env."
	// GitCredentialsDir is where a build's pod has the credential files,
	// named by their keys; EnvGitCredentials names it for the runner.
	GitCredentialsDir = "/var/run/kiln/git"
	EnvGitCredentials = "KILN_GIT_CREDENTIALS"
)

// ProjectSecretName is the name of the builds-namespace Secret holding a
// managed project's repository credentials and secret_env:
// "kiln-project-<id>".
func ProjectSecretName(projectID string) string {
	return "kiln-project-" + sanitize(projectID, maxLabel-len("kiln-project-"), true)
}
