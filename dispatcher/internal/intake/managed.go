package intake

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

// Workspaces is what intake needs to accept managed projects: the
// dispatcher's defaults, the Secret that keeps a project's credentials and
// secret_env (written before the project's row, so the provisioning job finds
// it), and the jobs that provision and retire. The provision package
// implements it; without it (no cluster) managed projects are refused.
type Workspaces interface {
	Defaults() WorkspaceDefaults
	// PutSecret writes the project's credentials Secret; DeleteSecret removes
	// it (absent is fine).
	PutSecret(ctx context.Context, projectID string, creds *schema.Credentials, secretEnv map[string]string) error
	DeleteSecret(ctx context.Context, projectID string) error
	// ProvisionTx and RetireTx enqueue the project's provisioning and
	// retirement in tx.
	ProvisionTx(ctx context.Context, tx pgx.Tx, projectID string) error
	RetireTx(ctx context.Context, tx pgx.Tx, projectID string) error
}

// WorkspaceDefaults are the dispatcher's settings for managed projects.
type WorkspaceDefaults struct {
	Image           string            // the workspace image when a project names none
	Env             map[string]string // env every workspace gets; a project's env overrides it
	AddonTypes      []string          // add-on types this dispatcher has servers for
	AllAddonTypes   []string          // every add-on type Kiln knows
	BuildsNamespace string            // where the credentials Secret is
	Container       string            // the workspace container
	Workdir         string            // where the clone is in the pod
	// Steps returns the provisioning steps of a project with these add-ons.
	Steps func(addons []string) []string
	// AddonEnv names the variables an add-on type sets (postgres: DATABASE_URL).
	AddonEnv func(typ string) []string
}

// Limits on a managed project's input.
const (
	MaxEnvVars         = 100
	MaxEnvValueBytes   = 32 << 10
	MaxTokenBytes      = 4 << 10
	MaxSSHKeyBytes     = 16 << 10
	MaxRepoURLLen      = 2048
	managedNamePrefix  = "kiln-"
	maxNamespaceLength = 63
)

var (
	envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	scpLike = regexp.MustCompile(`^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\s]+$`)
	imageRe = regexp.MustCompile(`^[a-z0-9][a-z0-9._/:@-]*$`)
)

// reservedEnv are variables the workspace sets itself.
var reservedEnv = []string{"HOME", "KILN_REPO_URL", "KILN_REPO_BRANCH"}

// normalizeManaged checks a managed project's input (in.Repository is set),
// fills p's target from the defaults and returns what is stored.
func normalizeManaged(in schema.ProjectInput, p *schema.Project, d *WorkspaceDefaults, prefix string, v *ValidationError) *store.Managed {
	if d == nil {
		v.add(prefix+"repository", "managed projects need a dispatcher connected to a cluster; give namespace and pod_name for a bring-your-own-pod project")
		return nil
	}
	for _, f := range []struct{ name, value string }{
		{"pod_name", in.PodName}, {"pod_selector", in.PodSelector}, {"container", in.Container}, {"workdir", in.Workdir},
	} {
		if f.value != "" {
			v.add(prefix+f.name, "not allowed with repository: Kiln creates and names a managed project's pod")
		}
	}
	if in.GitRemote != "" && in.GitRemote != "origin" {
		v.add(prefix+"git_remote", "not allowed with repository: the workspace's clone names its remote origin")
	}
	repo := in.Repository
	rp := prefix + "repository."
	if repo.URL == "" {
		v.add(rp+"url", "required")
	} else if rule := checkRepoURL(repo.URL); rule != "" {
		v.add(rp+"url", "%s", rule)
	}
	if repo.Branch == "" {
		v.add(rp+"branch", "required")
	} else if !validBranch(repo.Branch) {
		v.add(rp+"branch", "must be a valid git branch name")
	}
	if in.GitBranch != "" && in.GitBranch != repo.Branch {
		v.add(prefix+"git_branch", "must be repository.branch or absent")
	}
	m := &store.Managed{BuildsNamespace: d.BuildsNamespace,
		Repository: schema.Repository{URL: repo.URL, Branch: repo.Branch}}
	if c := repo.Credentials; c != nil {
		m.Repository.Credentials, m.Repository.Username = checkCredentials(c, repo.URL, rp+"credentials.", v)
	}

	ws := in.Workspace
	if ws == nil {
		ws = &schema.WorkspaceInput{}
	}
	wp := prefix + "workspace."
	m.Workspace.Image = ws.Image
	if m.Workspace.Image == "" {
		m.Workspace.Image = d.Image
	} else if len(ws.Image) > 512 || !imageRe.MatchString(ws.Image) {
		v.add(wp+"image", "must be an image reference such as registry.example/team/image:tag")
	}
	addonEnv := map[string]string{} // variable → add-on type
	seenAddon := map[string]bool{}
	for i, a := range in.Addons {
		f := fmt.Sprintf("%saddons[%d].type", prefix, i)
		switch {
		case a.Type == "":
			v.add(f, "required")
		case !slices.Contains(d.AllAddonTypes, a.Type):
			v.add(f, "unknown add-on type %q (known: %s)", a.Type, strings.Join(d.AllAddonTypes, ", "))
		case !slices.Contains(d.AddonTypes, a.Type):
			v.add(f, "add-on %q is not configured on this dispatcher (configured: %s)", a.Type, orNone(d.AddonTypes))
		case seenAddon[a.Type]:
			v.add(f, "add-on %q given twice", a.Type)
		default:
			seenAddon[a.Type] = true
			m.Addons = append(m.Addons, a.Type)
			for _, name := range d.AddonEnv(a.Type) {
				addonEnv[name] = a.Type
			}
		}
	}
	if len(ws.Env)+len(ws.SecretEnv) > MaxEnvVars {
		v.add(wp+"env", "env and secret_env hold at most %d variables together", MaxEnvVars)
	}
	checkEnv := func(field string, env map[string]string) {
		for _, k := range slices.Sorted(maps.Keys(env)) {
			val := env[k]
			switch {
			case !envName.MatchString(k) || len(k) > 253:
				v.add(field, "%q is not an environment variable name (letters, digits and '_', not starting with a digit)", k)
			case slices.Contains(reservedEnv, k) || strings.HasPrefix(k, "KILN_"):
				v.add(field, "%q is set by Kiln (HOME, KILN_*)", k)
			case addonEnv[k] != "":
				v.add(field, "%q is set by the %s add-on", k, addonEnv[k])
			case len(val) > MaxEnvValueBytes:
				v.add(field, "%q: value must be at most %d bytes", k, MaxEnvValueBytes)
			case hasNUL(val):
				v.add(field, "%q: %s", k, ruleNUL)
			}
		}
	}
	checkEnv(wp+"env", ws.Env)
	checkEnv(wp+"secret_env", ws.SecretEnv)
	for _, k := range slices.Sorted(maps.Keys(ws.SecretEnv)) {
		if _, dup := ws.Env[k]; dup {
			v.add(wp+"secret_env", "%q is also in env: give it once", k)
		}
	}
	m.Workspace.Env = map[string]string{}
	for k, val := range d.Env {
		if _, secret := ws.SecretEnv[k]; !secret {
			m.Workspace.Env[k] = val
		}
	}
	for k, val := range ws.Env {
		m.Workspace.Env[k] = val
	}
	if len(m.Workspace.Env) == 0 {
		m.Workspace.Env = nil
	}
	m.Workspace.SecretEnvKeys = slices.Sorted(maps.Keys(ws.SecretEnv))
	if ws.Resources != nil {
		checkResources(ws.Resources, wp+"resources.", v)
		m.Workspace.Resources = ws.Resources
	}

	if in.Namespace == "" {
		p.Namespace = managedNamespace(in.Name)
	}
	p.PodName, p.PodSelector = in.Name+"-0", ""
	p.Container, p.Workdir = d.Container, d.Workdir
	p.GitRemote, p.GitBranch = "origin", repo.Branch
	return m
}

func orNone(ss []string) string {
	if len(ss) == 0 {
		return "none"
	}
	return strings.Join(ss, ", ")
}

// managedNamespace is the namespace a managed project gets unless it names
// one: "kiln-<name>", cut to a DNS label with a hash when too long.
func managedNamespace(name string) string {
	ns := managedNamePrefix + name
	if len(ns) <= maxNamespaceLength {
		return ns
	}
	h := sha256.Sum256([]byte(name))
	return ns[:maxNamespaceLength-9] + "-" + hex.EncodeToString(h[:4])
}

func checkRepoURL(raw string) string {
	if len(raw) > MaxRepoURLLen {
		return fmt.Sprintf("must be at most %d bytes", MaxRepoURLLen)
	}
	if strings.HasPrefix(raw, "-") || strings.ContainsAny(raw, " \t\r\n") || hasControl(raw) {
		return "must not start with '-' or hold spaces or control characters"
	}
	if scpLike.MatchString(raw) && !strings.Contains(raw, "://") {
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "must be an https://, http://, ssh:// or user@host:path repository URL"
	}
	switch u.Scheme {
	case "https", "http":
		if u.User != nil {
			return "must not carry credentials: give them in repository.credentials"
		}
	case "ssh":
		if _, has := u.User.Password(); has {
			return "must not carry a password: give an ssh_private_key in repository.credentials"
		}
	default:
		return fmt.Sprintf("scheme %q is not supported (https, http, ssh)", u.Scheme)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "must not have a query or fragment"
	}
	return ""
}

func isSSHURL(raw string) bool {
	return strings.HasPrefix(raw, "ssh://") || (scpLike.MatchString(raw) && !strings.Contains(raw, "://"))
}

func hasControl(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0
}

// checkCredentials returns the kind and the username to show.
func checkCredentials(c *schema.Credentials, repoURL, cp string, v *ValidationError) (string, string) {
	https := c.Token != "" || c.Username != ""
	ssh := c.SSHPrivateKey != "" || c.KnownHosts != ""
	switch {
	case https && ssh:
		v.add(cp[:len(cp)-1], "give username and token (HTTPS) or ssh_private_key and known_hosts (SSH), not both")
		return "", ""
	case !https && !ssh:
		v.add(cp[:len(cp)-1], "give username and token (HTTPS) or ssh_private_key and known_hosts (SSH), or leave credentials out")
		return "", ""
	case https:
		if c.Token == "" {
			v.add(cp+"token", "required with username")
		} else if len(c.Token) > MaxTokenBytes || hasControl(c.Token) {
			v.add(cp+"token", "must be at most %d bytes, without control characters", MaxTokenBytes)
		}
		if len(c.Username) > 256 || hasControl(c.Username) || strings.ContainsAny(c.Username, ":@ ") {
			v.add(cp+"username", "must be at most 256 bytes, without control characters, spaces, ':' or '@'")
		}
		if isSSHURL(repoURL) {
			v.add(cp+"token", "a token is for an https:// repository URL; an ssh URL needs ssh_private_key")
		}
		return schema.CredentialsHTTPS, cmp.Or(c.Username, DefaultGitUsername)
	default:
		if c.SSHPrivateKey == "" {
			v.add(cp+"ssh_private_key", "required with known_hosts")
		} else if len(c.SSHPrivateKey) > MaxSSHKeyBytes || !strings.Contains(c.SSHPrivateKey, "PRIVATE KEY") {
			v.add(cp+"ssh_private_key", "must be a PEM or OpenSSH private key of at most %d bytes", MaxSSHKeyBytes)
		}
		if c.KnownHosts == "" {
			v.add(cp+"known_hosts", "required with ssh_private_key: the host's key is checked")
		} else if len(c.KnownHosts) > MaxSSHKeyBytes || hasNUL(c.KnownHosts) {
			v.add(cp+"known_hosts", "must be known_hosts lines of at most %d bytes", MaxSSHKeyBytes)
		}
		if !isSSHURL(repoURL) {
			v.add(cp+"ssh_private_key", "an SSH key is for an ssh:// or user@host:path repository URL")
		}
		return schema.CredentialsSSH, ""
	}
}

// DefaultGitUsername is the HTTPS username when credentials give only a token.
const DefaultGitUsername = "kiln"

func checkResources(r *schema.Resources, rp string, v *ValidationError) {
	parsed := map[string]map[string]resource.Quantity{}
	for kind, m := range map[string]map[string]string{"requests": r.Requests, "limits": r.Limits} {
		parsed[kind] = map[string]resource.Quantity{}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			if k != "cpu" && k != "memory" {
				v.add(rp+kind, "%q: only cpu and memory", k)
				continue
			}
			q, err := resource.ParseQuantity(m[k])
			if err != nil || q.Sign() <= 0 {
				v.add(rp+kind+"."+k, "must be a positive Kubernetes quantity such as 500m or 1Gi")
				continue
			}
			parsed[kind][k] = q
		}
	}
	for k, lim := range parsed["limits"] {
		if req, ok := parsed["requests"][k]; ok && req.Cmp(lim) > 0 {
			v.add(rp+"requests."+k, "must not exceed limits.%s", k)
		}
	}
}

// ErrNotManageable is wrapped when a project's status refuses a change.
var ErrNotManageable = errors.New("project status refuses this")
