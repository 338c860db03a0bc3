package workers

import "debug/elf"

const (
	shimCode    = shimAMD64
	shimMachine = elf.EM_X86_64
	isAMD64     = true
)
