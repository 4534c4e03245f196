package gitstep

import (
	"bytes"
	"fmt"
	"slices"
)

// ChangeKind is what happened to a path.
type ChangeKind string

const (
	Modified    ChangeKind = "modified"
	Added       ChangeKind = "added"
	Deleted     ChangeKind = "deleted"
	Renamed     ChangeKind = "renamed"
	Copied      ChangeKind = "copied"
	TypeChanged ChangeKind = "type_changed"
	Untracked   ChangeKind = "untracked"
	Unmerged    ChangeKind = "unmerged"
)

// Change is one entry of `git status`.
type Change struct {
	Kind ChangeKind
	// Path is the path now (the new path of a rename or copy), relative to the repository root.
	Path string
	// OrigPath is the path a rename or copy came from; empty otherwise.
	OrigPath string
	// Code is git's two-letter XY status, e.g. "M ", "??", "R ".
	Code string
}

// StatusArgs are the git arguments whose output ParseStatus reads.
var StatusArgs = []string{"status", "--porcelain=v1", "-z", "--untracked-files=all", "--renames"}

// ParseStatus reads the output of `git status --porcelain=v1 -z`: entries
// "XY path" ended by NUL, a rename or copy followed by its original path
// ended by NUL. Paths are raw bytes, never quoted, in this format. Ignored
// entries ("!!") are skipped.
func ParseStatus(out []byte) ([]Change, error) {
	var changes []Change
	fields := bytes.Split(out, []byte{0})
	if len(fields) > 0 && len(fields[len(fields)-1]) == 0 {
		fields = fields[:len(fields)-1]
	}
	for i := 0; i < len(fields); i++ {
		f := fields[i]
		if len(f) < 4 || f[2] != ' ' {
			return nil, fmt.Errorf("git status entry %q: want \"XY path\"", f)
		}
		x, y := f[0], f[1]
		c := Change{Code: string(f[:2]), Path: string(f[3:])}
		if x == '!' && y == '!' {
			continue
		}
		if x == 'R' || x == 'C' || y == 'R' || y == 'C' {
			i++
			if i >= len(fields) || len(fields[i]) == 0 {
				return nil, fmt.Errorf("git status entry %q: rename or copy without its original path", f)
			}
			c.OrigPath = string(fields[i])
		}
		kind, err := changeKind(x, y)
		if err != nil {
			return nil, fmt.Errorf("git status entry %q: %w", f, err)
		}
		c.Kind = kind
		changes = append(changes, c)
	}
	return changes, nil
}

// changeKind reads XY as what committing everything (`git add -A`) would record.
func changeKind(x, y byte) (ChangeKind, error) {
	const known = " MTADRCU?"
	if !bytes.ContainsRune([]byte(known), rune(x)) || !bytes.ContainsRune([]byte(known), rune(y)) {
		return "", fmt.Errorf("unknown status code %q", []byte{x, y})
	}
	switch {
	case x == '?' && y == '?':
		return Untracked, nil
	case x == 'U' || y == 'U' || (x == 'A' && y == 'A') || (x == 'D' && y == 'D'):
		return Unmerged, nil
	case y == 'D' || (x == 'D' && y == ' '):
		return Deleted, nil
	case x == 'R':
		return Renamed, nil
	case x == 'C':
		return Copied, nil
	case x == 'A':
		return Added, nil
	case x == 'T' || y == 'T':
		return TypeChanged, nil
	case x == 'M' || y == 'M':
		return Modified, nil
	case y == 'R':
		return Renamed, nil
	case y == 'C':
		return Copied, nil
	case y == 'A':
		return Added, nil
	}
	return "", fmt.Errorf("unknown status code %q", []byte{x, y})
}

// FilesChanged lists the paths changes touch, sorted and without repeats:
// each change's path, and the original path of a rename (which is gone).
func FilesChanged(changes []Change) []string {
	files := []string{}
	for _, c := range changes {
		files = append(files, c.Path)
		if c.Kind == Renamed && c.OrigPath != "" {
			files = append(files, c.OrigPath)
		}
	}
	slices.Sort(files)
	return slices.Compact(files)
}
