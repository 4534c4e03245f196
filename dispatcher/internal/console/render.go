package console

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/kilnbuild/kiln/dispatcher/internal/auth"
	"github.com/kilnbuild/kiln/dispatcher/internal/edge"
)

//go:embed templates
var templateFS embed.FS

// pageNames are the pages, each templates/<name>.html in templates/layout.html.
var pageNames = []string{"login", "reload", "error", "projects", "project", "build", "overview"}

type pages struct {
	byName map[string]*template.Template
}

func parsePages(assets string) (*pages, error) {
	funcs := template.FuncMap{
		"vis":   Visible,
		"when":  func(t any) *when { return whenOf(t) },
		"dur":   duration,
		"ms":    func(ms int64) string { return duration(time.Duration(ms) * time.Millisecond) },
		"usd":   usd,
		"short": short,
		"asset": func(name string) string { return assets + "/" + name },
		"ran":   ran,
	}
	p := &pages{byName: map[string]*template.Template{}}
	for _, name := range pageNames {
		t, err := template.New(name).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("console: parsing page %s: %w", name, err)
		}
		p.byName[name] = t
	}
	return p, nil
}

// base is what every page's layout shows.
type base struct {
	Title   string
	Who     *auth.Principal // nil: not signed in (the sign-in and error pages)
	CSRF    string          // the session's CSRF token; empty for a Bearer token
	Nav     string          // which top link is current
	RiverUI bool            // link the River UI (admins)
}

// view is what a page's template executes on.
type view struct {
	Base base
	Page any
}

// titled pages name their <title>.
type titled interface{ title() string }

// render writes the page name with data and status, or a 500 when the
// template fails (it is rendered to a buffer first, so nothing half is sent).
func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, name string, data titled) {
	b := base{Title: data.title()}
	if p := edge.Principal(r.Context()); p != nil {
		b.Who = p
		b.RiverUI = c.o.RiverUI && p.Admin
	}
	if s := edge.Session(r.Context()); s != nil {
		b.CSRF = s.CSRF
	}
	if n, ok := data.(interface{ nav() string }); ok {
		b.Nav = n.nav()
	}
	var buf bytes.Buffer
	if err := c.pages.byName[name].ExecuteTemplate(&buf, "layout", view{Base: b, Page: data}); err != nil {
		c.logger.ErrorContext(r.Context(), "rendering a console page", "page", name, "error", err,
			"request_id", edge.RequestID(r.Context()))
		http.Error(w, "internal error; quote the request id when reporting it: "+edge.RequestID(r.Context()),
			http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// when is a time as the pages show it: relative, with the absolute time
// (UTC) on hover, and machine-readable for the script that keeps the
// relative text current.
type when struct {
	ISO, Abs, Rel string
}

func whenOf(v any) *when {
	var t time.Time
	switch v := v.(type) {
	case time.Time:
		t = v
	case *time.Time:
		if v == nil {
			return nil
		}
		t = *v
	default:
		return nil
	}
	if t.IsZero() {
		return nil
	}
	return &when{ISO: t.UTC().Format(time.RFC3339), Abs: t.UTC().Format("2006-01-02 15:04:05 UTC"), Rel: relative(time.Now(), t)}
}

// relative is t as seen from now: "just now", "5 min ago", "in 2 h".
func relative(now, t time.Time) string {
	d := now.Sub(t)
	future := d < 0
	if future {
		d = -d
	}
	var s string
	switch {
	case d < 10*time.Second:
		return "just now"
	case d < time.Minute:
		s = fmt.Sprintf("%d s", int(d.Seconds()))
	case d < time.Hour:
		s = fmt.Sprintf("%d min", int(d.Minutes()))
	case d < 48*time.Hour:
		s = fmt.Sprintf("%d h", int(d.Hours()))
	default:
		s = fmt.Sprintf("%d d", int(d.Hours()/24))
	}
	if future {
		return "in " + s
	}
	return s + " ago"
}

// duration is d for people: "840 ms", "12.3 s", "4 min 05 s", "2 h 03 min".
func duration(d time.Duration) string {
	switch {
	case d <= 0:
		return "0 s"
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d < time.Hour:
		return fmt.Sprintf("%d min %02d s", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%d h %02d min", int(d.Hours()), int(d.Minutes())%60)
}

// ran is how long a build has run: started → finished, or → now while it runs.
func ran(started, finished *time.Time) string {
	if started == nil {
		return ""
	}
	end := time.Now()
	if finished != nil {
		end = *finished
	}
	return duration(end.Sub(*started))
}

func usd(v float64) string {
	switch {
	case v == 0:
		return "$0"
	case v < 0.01:
		return fmt.Sprintf("$%.4f", v)
	}
	return fmt.Sprintf("$%.2f", math.Round(v*100)/100)
}

func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
