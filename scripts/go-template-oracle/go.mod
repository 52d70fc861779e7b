module wick/go-template-oracle

go 1.22
