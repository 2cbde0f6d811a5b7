// Module image assembles weft's container image as an OCI/docker archive
// without a container engine. It is a separate module so that weft's own
// module does not depend on go-containerregistry.
module weft.dev/weft/deploy/image

go 1.26.0

require (
	github.com/google/go-cmp v0.7.0
	github.com/google/go-containerregistry v0.22.1
)

require (
	github.com/klauspost/compress v1.19.2 // indirect
	github.com/opencontainers/go-digest v1.0.0 // indirect
	github.com/opencontainers/image-spec v1.1.1 // indirect
)
