package opsrepo

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// Op is what WriteDir did to a file.
type Op string

// Ops of a Change.
const (
	Added   Op = "added"
	Updated Op = "updated"
	Removed Op = "removed"
)

// Change is one file WriteDir added, updated or removed (repo path).
type Change struct {
	Path string
	Op   Op
}

// ErrUnknownFiles: the folders opencsp owns contain files it did not write.
var ErrUnknownFiles = errors.New("files not written by opencsp")

// UnknownFilesError lists the files under the tree's roots that neither the
// tree nor any ownership record (FilesListName) accounts for.
type UnknownFilesError struct {
	Roots []string
	Paths []string
}

func (e *UnknownFilesError) Error() string {
	const show = 10
	list := e.Paths
	more := ""
	if len(list) > show {
		list, more = list[:show], fmt.Sprintf(" (and %d more)", len(e.Paths)-show)
	}
	return fmt.Sprintf("%d file(s) under %s/ were not written by opencsp: %s%s; remove them, or adopt them (--adopt) to let opencsp delete them",
		len(e.Paths), strings.Join(e.Roots, "/, "), strings.Join(list, ", "), more)
}

// Is makes errors.Is(err, ErrUnknownFiles) work.
func (e *UnknownFilesError) Is(target error) bool { return target == ErrUnknownFiles }

// WriteDir makes the tree's roots in dir (a review folder or a git working
// copy) equal to the tree, under the ownership rules of README.md:
//   - every tree file is written (0644) when its content differs;
//   - a file under the roots that the tree lacks is removed when the
//     previous ownership record of this cluster lists it (e.g. the layer of
//     a component that was disabled), kept when it is under components/ and
//     another cluster's record lists it, and otherwise unknown;
//   - unknown files (and symlinks) fail the write with *UnknownFilesError
//     before anything is changed, unless adopt, which removes them.
//
// Files outside the roots are never touched. It returns the changes,
// sorted by path.
func WriteDir(dir string, t *Tree, adopt bool) ([]Change, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	own, others, err := ownershipRecords(dir, path.Join(t.Path, FilesListName))
	if err != nil {
		return nil, err
	}
	var remove, unknown []string
	for _, root := range t.Roots() {
		if err := checkNoSymlinkParents(dir, root); err != nil {
			return nil, err
		}
		err := filepath.WalkDir(filepath.Join(dir, filepath.FromSlash(root)), func(p string, d fs.DirEntry, err error) error {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			if d.IsDir() {
				return nil
			}
			rel, err := filepath.Rel(dir, p)
			if err != nil {
				return err
			}
			rel = filepath.ToSlash(rel)
			switch _, inTree := t.Files[rel]; {
			case d.Type()&fs.ModeSymlink != 0:
				unknown = append(unknown, rel) // never written through
			case inTree:
			case own[rel]:
				remove = append(remove, rel)
			case others[rel] && strings.HasPrefix(rel, ComponentsDir+"/"):
			default:
				unknown = append(unknown, rel)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("scan %s: %w", root, err)
		}
	}
	if len(unknown) > 0 {
		if !adopt {
			slices.Sort(unknown)
			return nil, &UnknownFilesError{Roots: t.Roots(), Paths: unknown}
		}
		remove = append(remove, unknown...)
	}

	var changes []Change
	for _, rel := range remove {
		if err := os.Remove(filepath.Join(dir, filepath.FromSlash(rel))); err != nil {
			return nil, fmt.Errorf("remove %s: %w", rel, err)
		}
		changes = append(changes, Change{rel, Removed})
	}
	for _, rel := range t.Paths() {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		old, err := os.ReadFile(p)
		op := Updated
		switch {
		case errors.Is(err, fs.ErrNotExist):
			op = Added
		case err != nil:
			return nil, fmt.Errorf("read %s: %w", rel, err)
		case bytes.Equal(old, t.Files[rel]):
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, fmt.Errorf("create folder of %s: %w", rel, err)
		}
		if err := os.WriteFile(p, t.Files[rel], 0o644); err != nil {
			return nil, fmt.Errorf("write %s: %w", rel, err)
		}
		changes = append(changes, Change{rel, op})
	}
	for _, rel := range remove {
		removeEmptyParents(dir, path.Dir(rel), t.Roots())
	}
	slices.SortFunc(changes, func(a, b Change) int { return strings.Compare(a.Path, b.Path) })
	return changes, nil
}

// ownershipRecords reads this cluster's record (self) and every other
// cluster's FilesListName in the repo.
func ownershipRecords(dir, self string) (own, others map[string]bool, err error) {
	own, others = map[string]bool{}, map[string]bool{}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == ".git" {
			return filepath.SkipDir
		}
		if d.IsDir() || d.Name() != FilesListName || !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		target := others
		if filepath.ToSlash(rel) == self {
			target = own
		}
		return readRecord(p, target)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("read ownership records: %w", err)
	}
	return own, others, nil
}

func readRecord(p string, into map[string]bool) error {
	data, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line != "" && !strings.HasPrefix(line, "#") && fs.ValidPath(line) {
			into[line] = true
		}
	}
	return sc.Err()
}

// checkNoSymlinkParents refuses a root whose folders are symlinks: writes
// would land outside the repo.
func checkNoSymlinkParents(dir, root string) error {
	cur := dir
	for _, part := range strings.Split(root, "/") {
		cur = filepath.Join(cur, part)
		st, err := os.Lstat(cur)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if st.Mode()&fs.ModeSymlink != 0 || !st.IsDir() {
			return fmt.Errorf("%s is a symlink or a file: opencsp writes %s/ only into plain folders", mustRel(dir, cur), root)
		}
	}
	return nil
}

func mustRel(dir, p string) string {
	rel, err := filepath.Rel(dir, p)
	if err != nil {
		return p
	}
	return filepath.ToSlash(rel)
}

// removeEmptyParents removes empty folders from rel up to (excluding) the
// roots.
func removeEmptyParents(dir, rel string, roots []string) {
	for rel != "." && rel != "/" && !slices.Contains(roots, rel) {
		if os.Remove(filepath.Join(dir, filepath.FromSlash(rel))) != nil {
			return // not empty
		}
		rel = path.Dir(rel)
	}
}

// ChangedPaths returns the paths of changes.
func ChangedPaths(changes []Change) []string {
	out := make([]string, 0, len(changes))
	for _, c := range changes {
		out = append(out, c.Path)
	}
	return out
}
