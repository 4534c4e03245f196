package jobtemplates

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"
)

//go:embed templates/*.yaml
var embedded embed.FS

// Template describes how a build runs: runner image, resources, limits, agent settings.
type Template struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
}

// Catalog is a set of named templates.
type Catalog struct {
	templates map[string]*Template
}

// Embedded returns the catalog shipped with Kiln.
func Embedded() *Catalog {
	c, err := Load(embedded)
	if err != nil {
		panic(fmt.Sprintf("embedded job templates are invalid: %v", err))
	}
	return c
}

// Load reads every *.yaml file under templates/ in fsys.
func Load(fsys fs.FS) (*Catalog, error) {
	c := &Catalog{templates: map[string]*Template{}}
	files, err := fs.Glob(fsys, "templates/*.yaml")
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		b, err := fs.ReadFile(fsys, f)
		if err != nil {
			return nil, err
		}
		var t Template
		if err := yaml.UnmarshalStrict(b, &t); err != nil {
			return nil, fmt.Errorf("template %s: %w", f, err)
		}
		if t.Name == "" {
			t.Name = strings.TrimSuffix(path.Base(f), ".yaml")
		}
		c.templates[t.Name] = &t
	}
	return c, nil
}

// Get returns the template called name.
func (c *Catalog) Get(name string) (*Template, bool) {
	t, ok := c.templates[name]
	return t, ok
}

// Names lists the catalog's template names, sorted.
func (c *Catalog) Names() []string {
	names := make([]string, 0, len(c.templates))
	for n := range c.templates {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}
