# The toolgate image: one static binary; the controller provisions proxies
# running the same image with `toolgate proxy`.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=devel
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /toolgate ./cmd/toolgate

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /toolgate /toolgate
USER 65532:65532
ENTRYPOINT ["/toolgate"]
