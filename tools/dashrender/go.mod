module github.com/relaydev/relay/tools/dashrender

go 1.26.8
