// Package imagecheck holds the checks of CHOM's container image
// (deploy/Dockerfile). CI cannot pull a base image, so it cannot build the
// Dockerfile's Go stage; it runs the script that stage runs
// (deploy/image-root.sh) on the host instead, and builds the Dockerfile's
// final stage, cut verbatim from the file, over the script's output
// (CIDockerfile). Check refuses a Dockerfile whose final stage could then
// differ from what users build: one that copies from anything but the root
// stage's /out, or a root stage that writes /out other than through the
// script, or a Go version other than go.mod's. The tests build that image
// on a private dockerd, run `chom dev` in it and check what it promises.
package imagecheck
