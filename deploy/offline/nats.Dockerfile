# Offline stand-in for the public nats:*-alpine image, used by
# deploy/compose-test.sh where no registry can be reached. The build context
# (assembled by deploy/build-images.sh) holds:
#   nats-server  built on the host from the github.com/nats-io/nats-server/v2
#                module pinned in go.mod (CGO_ENABLED=0)
#   wget         Debian's busybox-static, so the compose healthcheck
#                (`wget ... /healthz`) runs unchanged as in the alpine image
#   data/        an empty directory: the JetStream store, owned by the user
#                below so a fresh named volume is writable
FROM scratch
COPY nats-server /usr/local/bin/nats-server
COPY wget /usr/bin/wget
COPY --chown=65532:65532 data/ /data/
USER 65532:65532
EXPOSE 4222 6222 8222
ENTRYPOINT ["/usr/local/bin/nats-server"]
CMD ["--config", "/etc/nats/nats.conf"]
