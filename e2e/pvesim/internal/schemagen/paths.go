package schemagen

import (
	"errors"
	"os"
	"path/filepath"
)

// ReferenceRel is the location of the official API description relative to
// the module root: the repository is checked out with shared/ as a sibling.
const ReferenceRel = "../shared/reference/pve-api/pve-api-9.1.json"

// OutputRel is the generated file relative to the module root.
const OutputRel = "e2e/pvesim/apischema.json"

// ModuleRoot walks up from dir to the directory holding go.mod.
func ModuleRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("schemagen: go.mod not found above " + dir)
		}
		dir = parent
	}
}

// ReferencePath returns the reference file's path for the module containing dir.
func ReferencePath(dir string) (string, error) {
	root, err := ModuleRoot(dir)
	if err != nil {
		return "", err
	}
	return filepath.Clean(filepath.Join(root, ReferenceRel)), nil
}
