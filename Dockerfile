# echoloop alone in an image: one static binary and an empty /certs, FROM
# scratch, so building pulls nothing and the image holds nothing else to
# patch. `go tool task image` builds bin/image/ and then this file; a plain
# `docker build .` without it finds nothing to copy.
FROM scratch

# A named volume mounted on /certs starts as a copy of this directory,
# owner included, so the non-root user below can write keys into it and
# read them back. The directory comes from bin/image/rootfs/ because a
# scratch image has no shell to make it with.
COPY --chown=65532:65532 bin/image/rootfs/ /
COPY bin/image/echoloop /echoloop

# scratch has no /etc/passwd, so the user is a number: 65532, the "nonroot"
# of distroless images, owns nothing on a typical host.
USER 65532:65532

EXPOSE 8443

# Healthy means answering grpc.health.v1 over mTLS, the way any client
# must. It presents /certs/client.crt: a server given only its own files
# needs its own check. Exec form, as there is no shell to run a string.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/echoloop", "health", "--certs", "/certs", "--url", "https://localhost:8443", "--timeout", "4s"]

ENTRYPOINT ["/echoloop"]
CMD ["serve", "--certs", "/certs", "--addr", ":8443"]
