// Package docscheck holds the documentation check, and no code of its own: a
// test that every relative link in the repository's Markdown files (README.md,
// docs/, deploy/, any other *.md outside hidden, node_modules and testdata
// directories) resolves to a file inside the repository, and every #anchor to a
// heading of its target by GitHub's slug rules; that README.md stays within
// 12 KB (12,288 bytes); and that README.md links every page of docs/.
//
// It needs no server: go test ./internal/docscheck/.
package docscheck
