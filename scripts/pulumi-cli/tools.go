//go:build tools

// Package tools pins the Pulumi CLI for scripts/pulumi-cli.sh: the CLI module itself has replace directives,
// so `go install ...@v3.248.0` refuses; this wrapper module requires it and builds its main package.
package tools

import _ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
