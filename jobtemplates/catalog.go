package jobtemplates

import (
	"cmp"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
)

//go:embed templates/*.yaml
var embedded embed.FS

// ErrUnknownTemplate is returned (wrapped) by Catalog.Resolve for a name the
// catalog does not hold.
var ErrUnknownTemplate = errors.New("unknown template")

// Catalog is a set of named, validated templates. It is immutable and safe
// for concurrent use; Merge returns a new Catalog.
type Catalog struct {
	templates map[string]*Template
}

var embeddedCatalog = sync.OnceValues(func() (*Catalog, error) {
	sub, err := fs.Sub(embedded, "templates")
	if err != nil {
		return nil, err
	}
	return load(sub, "templates/")
})

// Embedded returns the catalog shipped with Kiln (templates/*.yaml). It
// panics if those files are invalid, which the package's tests rule out.
func Embedded() *Catalog {
	c, err := embeddedCatalog()
	if err != nil {
		panic(fmt.Sprintf("embedded job templates are invalid: %v", err))
	}
	return c
}

// Load reads every *.yaml and *.yml file at the root of fsys (other files,
// hidden files and directories are skipped, so a mounted ConfigMap with its
// ..data links loads as is) and parses each with Parse. Any invalid file
// fails the whole load, with an error naming the file and field.
func Load(fsys fs.FS) (*Catalog, error) {
	return load(fsys, "")
}

// LoadDir loads an operator's directory of templates, such as a ConfigMap
// mounted as a volume. Merge it over Embedded() to override or add templates:
//
//	ops, err := jobtemplates.LoadDir(dir)
//	catalog := jobtemplates.Embedded().Merge(ops)
func LoadDir(dir string) (*Catalog, error) {
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("loading templates: %w", err)
	}
	return load(os.DirFS(dir), strings.TrimSuffix(dir, "/")+"/")
}

func load(fsys fs.FS, prefix string) (*Catalog, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("reading templates %s: %w", cmp.Or(prefix, "."), err)
	}
	c := &Catalog{templates: map[string]*Template{}}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || !(strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")) {
			continue
		}
		// Stat follows symlinks (ConfigMap keys are links into ..data).
		if fi, err := fs.Stat(fsys, name); err != nil || fi.IsDir() {
			continue
		}
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, fmt.Errorf("reading template %s%s: %w", prefix, name, err)
		}
		t, err := Parse(prefix+name, b)
		if err != nil {
			return nil, err
		}
		if _, dup := c.templates[t.Name]; dup {
			return nil, fmt.Errorf("%s%s: name: template %q is defined twice", prefix, name, t.Name)
		}
		c.templates[t.Name] = t
	}
	return c, nil
}

// Merge returns a catalog holding c's templates and over's, over's winning
// where both define a name. Neither c nor over changes.
func (c *Catalog) Merge(over *Catalog) *Catalog {
	m := &Catalog{templates: maps.Clone(c.templates)}
	if m.templates == nil {
		m.templates = map[string]*Template{}
	}
	if over != nil {
		maps.Copy(m.templates, over.templates)
	}
	return m
}

// Has reports whether the catalog has a template called name, without copying it.
func (c *Catalog) Has(name string) bool {
	_, ok := c.templates[name]
	return ok
}

// Get returns a copy of the template called name.
func (c *Catalog) Get(name string) (*Template, bool) {
	t, ok := c.templates[name]
	if !ok {
		return nil, false
	}
	return t.DeepCopy(), true
}

// Resolve is Get with an error for the API: an unknown name returns an error
// wrapping ErrUnknownTemplate that lists the known names.
func (c *Catalog) Resolve(name string) (*Template, error) {
	if t, ok := c.Get(name); ok {
		return t, nil
	}
	return nil, fmt.Errorf("%w %q; known: %s", ErrUnknownTemplate, name, strings.Join(c.Names(), ", "))
}

// Names lists the catalog's template names, sorted.
func (c *Catalog) Names() []string {
	return slices.Sorted(maps.Keys(c.templates))
}
