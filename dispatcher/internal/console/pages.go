package console

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/kilnbuild/kiln/dispatcher/internal/edge"
	"github.com/kilnbuild/kiln/dispatcher/internal/intake"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

type loginPage struct {
	Next  string
	Error string
}

func (*loginPage) title() string { return "Sign in" }

type reloadPage struct{ URL string }

func (*reloadPage) title() string { return "Opening…" }

type errorPage struct{ Problem edge.Problem }

func (p *errorPage) title() string { return p.Problem.Title }

// projectRow is a line of the projects page.
type projectRow struct {
	*schema.Project
	Active store.ActiveCounts
}

type projectsPage struct {
	Projects []projectRow
}

func (*projectsPage) title() string { return "Projects" }
func (*projectsPage) nav() string   { return "projects" }

func (c *Console) projectsPage(w http.ResponseWriter, r *http.Request) {
	who := edge.Principal(r.Context())
	ps, err := c.o.Intake.ListProjects(r.Context(), who)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	counts, err := c.o.Intake.ActiveCounts(r.Context(), who)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	spends, err := c.o.Intake.ProjectSpends(r.Context(), who)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	page := &projectsPage{Projects: make([]projectRow, len(ps))}
	for i, p := range ps {
		if s, ok := spends[p.ID]; ok {
			p.Spend = &s
		}
		page.Projects[i] = projectRow{Project: p, Active: counts[p.ID]}
	}
	c.render(w, r, http.StatusOK, "projects", page)
}

type projectPage struct {
	Project  *schema.Project
	Status   schema.Status // the filter; empty: every build
	Statuses []schema.Status
	Builds   []schema.BuildSummary
	Next     string // the next page's URL; empty: the last page
	First    string // the first page's URL when this is not it
	Error    string // a bad query
}

func (p *projectPage) title() string { return Visible(p.Project.Name) }
func (*projectPage) nav() string     { return "projects" }

// Filter is the URL of the page listing the builds with status.
func (p *projectPage) Filter(status schema.Status) string {
	u := Prefix + "/projects/" + p.Project.ID
	if status != "" {
		u += "?status=" + url.QueryEscape(string(status))
	}
	return u
}

func (c *Console) projectPage(w http.ResponseWriter, r *http.Request) {
	id, ok := edge.PathID(r, "id")
	if !ok {
		c.fail(w, r, edge.NoSuch("project", id))
		return
	}
	p, err := c.o.Intake.GetProject(r.Context(), edge.Principal(r.Context()), id)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	page := &projectPage{Project: p, Statuses: schema.Statuses}
	params, err := intake.ListQuery(p.ID, r.URL.Query())
	var ve intake.ValidationError
	if errors.As(err, &ve) {
		page.Error = ve.Error()
		c.render(w, r, http.StatusUnprocessableEntity, "project", page)
		return
	}
	page.Status = params.Status
	list, err := c.o.Intake.ListBuildPage(r.Context(), params)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	page.Builds = list.Builds
	if list.NextCursor != "" {
		q := url.Values{"cursor": {list.NextCursor}}
		if params.Status != "" {
			q.Set("status", string(params.Status))
		}
		page.Next = Prefix + "/projects/" + p.ID + "?" + q.Encode()
	}
	if r.URL.Query().Get("cursor") != "" {
		page.First = page.Filter(params.Status)
	}
	c.render(w, r, http.StatusOK, "project", page)
}

type buildPage struct {
	Build   *schema.Build
	Project *schema.Project
	// Events is the URL of the build's event stream; empty: no timeline.
	Events      string
	CallbackTo  string // the callback URL's host (its path and query may hold secrets)
	Notice      string // what the last action did
	Error       string // why the last action failed
	FollowupKey string // the follow-up form's Idempotency-Key: one build per form
	Followup    *schema.BuildSpec
}

func (p *buildPage) title() string { return "Build " + short(p.Build.ID) }
func (*buildPage) nav() string     { return "projects" }

// Artifact is the console URL that downloads the artifact at path.
func (p *buildPage) Artifact(artifactPath string) string {
	return Prefix + "/builds/" + p.Build.ID + "/artifacts/" + (&url.URL{Path: artifactPath}).EscapedPath()
}

// Cost is what the build cost, when known.
func (p *buildPage) Cost() *float64 {
	if p.Build.Result == nil || p.Build.Result.Usage == nil {
		return nil
	}
	return &p.Build.Result.Usage.CostUSD
}

// notices are what the build page says after an action: fixed text by
// code, so a link cannot make the page say anything else.
var notices = map[string]string{
	"cancelled": "Cancel requested: the build stops and ends cancelled.",
}

func (c *Console) buildPage(w http.ResponseWriter, r *http.Request) {
	page, err := c.loadBuild(r)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	page.Notice = notices[r.URL.Query().Get("done")]
	c.render(w, r, http.StatusOK, "build", page)
}

func (c *Console) loadBuild(r *http.Request) (*buildPage, error) {
	id, ok := edge.PathID(r, "taskId")
	if !ok {
		return nil, edge.NoSuch("build", id)
	}
	who := edge.Principal(r.Context())
	b, err := c.o.Intake.GetBuild(r.Context(), who, id)
	if err != nil {
		return nil, err
	}
	if b.Callbacks, err = c.o.Intake.CallbackAttempts(r.Context(), b); err != nil {
		return nil, err
	}
	if b.Followups, err = c.o.Intake.Followups(r.Context(), b); err != nil {
		return nil, err
	}
	p, err := c.o.Intake.GetProject(r.Context(), who, b.ProjectID)
	if err != nil && !errors.Is(err, store.ErrNotFound) { // a retired project still shows its builds
		return nil, err
	}
	page := &buildPage{Build: &b.Build, Project: p, FollowupKey: randomKey(),
		Followup: &schema.BuildSpec{AutoCommit: b.Spec.AutoCommit, AutoPush: b.Spec.AutoPush}}
	if c.o.Events != nil {
		page.Events = Prefix + "/builds/" + b.ID + "/events"
	}
	if u, err := url.Parse(b.Spec.CallbackURL); err == nil && b.Spec.CallbackURL != "" {
		page.CallbackTo = u.Scheme + "://" + u.Host
	}
	return page, nil
}

// taskID returns the build id of the route, or answers the 404 page.
func (c *Console) taskID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id, ok := edge.PathID(r, "taskId")
	if !ok {
		c.fail(w, r, edge.NoSuch("build", id))
	}
	return id, ok
}

func randomKey() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return "console-" + hex.EncodeToString(b)
}

// action checks a console form post (form, CSRF token) and answers the
// refusal itself.
func (c *Console) action(w http.ResponseWriter, r *http.Request) bool {
	if err := parseForm(w, r); err != nil {
		c.fail(w, r, err)
		return false
	}
	if err := edge.CheckCSRF(r); err != nil {
		c.fail(w, r, err)
		return false
	}
	return true
}

func (c *Console) cancel(w http.ResponseWriter, r *http.Request) {
	if !c.action(w, r) {
		return
	}
	id, ok := c.taskID(w, r)
	if !ok {
		return
	}
	reason := strings.TrimSpace(r.PostFormValue("reason"))
	if len(reason) > 1024 {
		c.actionFailed(w, r, edge.Field(http.StatusUnprocessableEntity, "reason", "must be at most 1024 bytes"), nil)
		return
	}
	if reason == "" {
		if p := edge.Principal(r.Context()); p != nil {
			reason = "cancelled from the console by " + p.Name
		}
	}
	if _, err := c.o.Intake.Cancel(r.Context(), edge.Principal(r.Context()), id, reason); err != nil {
		c.actionFailed(w, r, err, nil)
		return
	}
	http.Redirect(w, r, Prefix+"/builds/"+id+"?done=cancelled", http.StatusSeeOther)
}

func (c *Console) followup(w http.ResponseWriter, r *http.Request) {
	if !c.action(w, r) {
		return
	}
	id, ok := c.taskID(w, r)
	if !ok {
		return
	}
	spec := schema.BuildSpec{Prompt: r.PostFormValue("prompt"), AutoCommit: r.PostFormValue("auto_commit") == "on",
		AutoPush: r.PostFormValue("auto_push") == "on"}
	key := r.PostFormValue("key")
	if len(key) > 255 {
		key = ""
	}
	acc, err := c.o.Intake.SubmitFollowup(r.Context(), edge.Principal(r.Context()), id, spec, key)
	if err != nil {
		c.actionFailed(w, r, err, &spec)
		return
	}
	http.Redirect(w, r, Prefix+"/builds/"+acc.Build.ID, http.StatusSeeOther)
}

// actionFailed shows the build page again with why the action failed,
// keeping a follow-up's spec (nil: none) in its form; a build that cannot
// be seen at all is the 404 page.
func (c *Console) actionFailed(w http.ResponseWriter, r *http.Request, err error, followup *schema.BuildSpec) {
	page, lerr := c.loadBuild(r)
	if lerr != nil {
		c.fail(w, r, lerr)
		return
	}
	p := edge.ProblemOf(w, r, err)
	if p.Status == http.StatusNotFound {
		c.render(w, r, p.Status, "error", &errorPage{Problem: p})
		return
	}
	page.Error = p.Detail
	if followup != nil {
		page.Followup = followup
	}
	c.render(w, r, p.Status, "build", page)
}

func (c *Console) artifact(w http.ResponseWriter, r *http.Request) {
	id, ok := c.taskID(w, r)
	if !ok {
		return
	}
	b, err := c.o.Intake.GetBuild(r.Context(), edge.Principal(r.Context()), id)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	p, ok := edge.PathText(r, "*")
	if !ok {
		c.fail(w, r, edge.NoSuch("artifact", p))
		return
	}
	content, sha, err := c.o.Intake.GetArtifact(r.Context(), b, p)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	edge.Attachment(w, p, sha, content)
}

type overviewPage struct {
	Overview  *store.Overview
	Hours     *chart
	Durations *chart
}

func (*overviewPage) title() string { return "Overview" }
func (*overviewPage) nav() string   { return "overview" }

// overviewWindow is how far back the overview looks.
const overviewWindow = 24 * time.Hour

func (c *Console) overviewPage(w http.ResponseWriter, r *http.Request) {
	now := c.now()
	o, err := c.o.Intake.Overview(r.Context(), edge.Principal(r.Context()), now.Add(-overviewWindow+time.Hour), now)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	c.render(w, r, http.StatusOK, "overview", &overviewPage{Overview: o,
		Hours: hoursChart(o.Hours), Durations: durationsChart(o.ByTemplate)})
}
