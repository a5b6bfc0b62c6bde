package stages

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
)

// Fingerprint is the sha256 (hex) of the JSON encoding of a stage's inputs.
// encoding/json is deterministic for our purposes: struct fields keep their
// declaration order and map keys are sorted. nil inputs hash "null". Inputs
// hold secret references, never secret values, so a rotated secret behind an
// unchanged reference does not re-run a stage.
func Fingerprint(inputs any) (string, error) {
	data, err := json.Marshal(inputs)
	if err != nil {
		return "", fmt.Errorf("encode inputs: %w", err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:]), nil
}
