package gitstep

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
)

func TestParseStatus(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want []Change
	}{
		{"empty", "", nil},
		{"modified in worktree", " M a.go\x00", []Change{{Kind: Modified, Path: "a.go", Code: " M"}}},
		{"modified in index", "M  a.go\x00", []Change{{Kind: Modified, Path: "a.go", Code: "M "}}},
		{"added then modified", "AM new.go\x00", []Change{{Kind: Added, Path: "new.go", Code: "AM"}}},
		{"deleted in worktree", " D gone.txt\x00", []Change{{Kind: Deleted, Path: "gone.txt", Code: " D"}}},
		{"deleted in index", "D  gone.txt\x00", []Change{{Kind: Deleted, Path: "gone.txt", Code: "D "}}},
		{"modified then deleted", "MD x\x00", []Change{{Kind: Deleted, Path: "x", Code: "MD"}}},
		{"renamed", "R  new name.txt\x00old name.txt\x00",
			[]Change{{Kind: Renamed, Path: "new name.txt", OrigPath: "old name.txt", Code: "R "}}},
		{"renamed and modified", "RM b\x00a\x00", []Change{{Kind: Renamed, Path: "b", OrigPath: "a", Code: "RM"}}},
		{"copied", "C  copy\x00orig\x00", []Change{{Kind: Copied, Path: "copy", OrigPath: "orig", Code: "C "}}},
		{"type changed", " T link\x00", []Change{{Kind: TypeChanged, Path: "link", Code: " T"}}},
		{"untracked odd names", "?? with space.txt\x00?? ünïcödé ✓.md\x00?? quo\"te\\back\x00?? new\nline\x00?? -dash\x00",
			[]Change{
				{Kind: Untracked, Path: "with space.txt", Code: "??"},
				{Kind: Untracked, Path: "ünïcödé ✓.md", Code: "??"},
				{Kind: Untracked, Path: "quo\"te\\back", Code: "??"},
				{Kind: Untracked, Path: "new\nline", Code: "??"},
				{Kind: Untracked, Path: "-dash", Code: "??"},
			}},
		{"unmerged", "UU c\x00AA d\x00DD e\x00", []Change{
			{Kind: Unmerged, Path: "c", Code: "UU"}, {Kind: Unmerged, Path: "d", Code: "AA"}, {Kind: Unmerged, Path: "e", Code: "DD"},
		}},
		{"ignored skipped", "!! build/\x00 M a\x00", []Change{{Kind: Modified, Path: "a", Code: " M"}}},
		{"no trailing NUL", " M a", []Change{{Kind: Modified, Path: "a", Code: " M"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseStatus([]byte(tt.in))
			require.NoError(t, err)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("changes (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseStatusRejects(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		"M\x00",                     // too short
		"MMa.go\x00",                // no space
		"R  new\x00",                // rename without its origin
		"R  new\x00\x00",            // empty origin
		"XY a\x00",                  // unknown code
		" M a\x00garbage entry\x00", // second entry malformed
	} {
		_, err := ParseStatus([]byte(in))
		require.Error(t, err, "%q", in)
	}
}

func TestFilesChanged(t *testing.T) {
	t.Parallel()
	got := FilesChanged([]Change{
		{Kind: Modified, Path: "b"},
		{Kind: Renamed, Path: "new", OrigPath: "old"},
		{Kind: Copied, Path: "copy", OrigPath: "b"},
		{Kind: Deleted, Path: "a"},
		{Kind: Modified, Path: "b"},
	})
	require.Equal(t, []string{"a", "b", "copy", "new", "old"}, got)
	require.Equal(t, []string{}, FilesChanged(nil), "never nil: files_changed is an array")
}

// TestParseStatusRealGit reads what git itself prints for odd file names.
func TestParseStatusRealGit(t *testing.T) {
	t.Parallel()
	s := setup(t)
	names := []string{"with space.txt", "ünïcödé ✓.md", "quo\"te.txt", "tab\there.txt", "new\nline.txt", "-dash.txt", "keep.txt", "old name.txt"}
	for _, n := range names {
		s.write(t, n, "v1 "+n)
	}
	s.git(t, "add", "-A")
	s.git(t, "commit", "-m", "odd names")

	s.write(t, "with space.txt", "v2")
	s.write(t, "ünïcödé ✓.md", "v2")
	require.NoError(t, os.Remove(filepath.Join(s.work, "quo\"te.txt")))
	require.NoError(t, os.Mkdir(filepath.Join(s.work, "sub dir"), 0o755))
	s.git(t, "mv", "old name.txt", "sub dir/new näme.txt")
	s.write(t, "untracked dir/ñ ew.txt", "new")
	s.write(t, "new\nline.txt", "v2")

	out := s.git(t, StatusArgs...)
	got, err := ParseStatus(out)
	require.NoError(t, err)
	want := []Change{
		{Kind: Modified, Path: "new\nline.txt", Code: " M"},
		{Kind: Deleted, Path: "quo\"te.txt", Code: " D"},
		{Kind: Renamed, Path: "sub dir/new näme.txt", OrigPath: "old name.txt", Code: "R "},
		{Kind: Modified, Path: "with space.txt", Code: " M"},
		{Kind: Modified, Path: "ünïcödé ✓.md", Code: " M"},
		{Kind: Untracked, Path: "untracked dir/ñ ew.txt", Code: "??"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("changes (-want +got):\n%s\nraw: %q", diff, out)
	}
}
