package workers

import "debug/elf"

const (
	shimCode    = shimARM64
	shimMachine = elf.EM_AARCH64
	isAMD64     = false
)
