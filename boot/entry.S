/*
 * Boot entry: multiboot headers, the 32-bit entry point and the switch to
 * long mode. Assembled into the hypervisor by arch/x86_64/boot.rs.
 *
 * Both boot protocols enter _start32 in 32-bit protected mode, paging off,
 * EAX = the loader's magic, EBX = the physical address of its information
 * structure. This code builds throw-away page tables that map the first
 * 4 GiB of physical memory three times:
 *   - identity (so this code keeps running when paging comes on),
 *   - at 0xFFFF830000000000 (L4 slot 262, the direct map's final address),
 *   - at 0xFFFF82D080000000 (slot 261, the image's link address);
 * enables long mode (with NX when the CPU has it) and calls
 * hv_start64(magic, info) on the boot stack, in the high half. Rust code
 * then builds the real page tables and never looks back.
 */

    .equ MB2_MAGIC, 0xE85250D6
    .equ MB1_MAGIC, 0x1BADB002
/* page-align modules | memory info | a.out kludge (load addresses below) */
    .equ MB1_FLAGS, 0x00010003

    .equ PTE_P_RW, 0x003
    .equ PTE_P_RW_PS, 0x083

    .equ MSR_EFER, 0xC0000080
    .equ EFER_LME, (1 << 8)
    .equ EFER_NXE, (1 << 11)

    .equ COM1, 0x3F8

    .section .multiboot, "a"
    .balign 8
mb2_start:
    .long MB2_MAGIC
    .long 0                                   /* i386 protected mode */
    .long mb2_end - mb2_start
    .long 0x100000000 - (MB2_MAGIC + (mb2_end - mb2_start))
    /* module alignment tag: modules page-aligned */
    .word 6, 0
    .long 8
    /* end tag */
    .word 0, 0
    .long 8
mb2_end:

    .balign 4
mb1_header:
    .long MB1_MAGIC
    .long MB1_FLAGS
    .long 0x100000000 - (MB1_MAGIC + MB1_FLAGS)
    .long mb1_header                          /* header_addr */
    .long __load_start_phys                   /* load_addr */
    .long __load_end_phys                     /* load_end_addr */
    .long __bss_end_phys                      /* bss_end_addr */
    .long _start32                            /* entry_addr */

    .section .boot.text, "ax"
    .code32
    .global _start32
_start32:
    cli
    cld
    mov     %eax, %edi                        /* magic, later arg 1 */
    mov     %ebx, %esi                        /* info, later arg 2 */

    /* Long mode? */
    mov     $0x80000000, %eax
    cpuid
    cmp     $0x80000001, %eax
    jb      no_long_mode
    mov     $0x80000001, %eax
    cpuid
    test    $(1 << 29), %edx
    jz      no_long_mode
    mov     %edx, %ebp                        /* keep the NX bit (20) for EFER */

    /* PD0..PD3: 2 MiB pages over physical 0..4 GiB. */
    mov     $boot_pd, %ebx
    xor     %ecx, %ecx
1:  mov     %ecx, %eax
    shl     $21, %eax
    or      $PTE_P_RW_PS, %eax
    mov     %eax, (%ebx, %ecx, 8)
    mov     %ecx, %eax
    shr     $11, %eax                         /* bits 32+ of (ecx << 21) */
    mov     %eax, 4(%ebx, %ecx, 8)
    inc     %ecx
    cmp     $2048, %ecx
    jne     1b

    /* PDPT for the identity map and the direct map: four 1 GiB slots. */
    mov     $boot_pdpt_low, %ebx
    xor     %ecx, %ecx
2:  mov     %ecx, %eax
    shl     $12, %eax
    add     $boot_pd, %eax
    or      $PTE_P_RW, %eax
    mov     %eax, (%ebx, %ecx, 8)
    inc     %ecx
    cmp     $4, %ecx
    jne     2b

    /* PDPT for the image: 0xFFFF82D080000000 is slot 322 of L4 slot 261. */
    mov     $(boot_pd + PTE_P_RW), %eax
    mov     %eax, boot_pdpt_high + 322 * 8

    mov     $(boot_pdpt_low + PTE_P_RW), %eax
    mov     %eax, boot_pml4 + 0 * 8
    mov     %eax, boot_pml4 + 262 * 8
    mov     $(boot_pdpt_high + PTE_P_RW), %eax
    mov     %eax, boot_pml4 + 261 * 8

    mov     %cr4, %eax
    or      $(1 << 5), %eax                   /* PAE */
    mov     %eax, %cr4
    mov     $boot_pml4, %eax
    mov     %eax, %cr3

    mov     $MSR_EFER, %ecx
    rdmsr
    or      $EFER_LME, %eax
    test    $(1 << 20), %ebp
    jz      3f
    or      $EFER_NXE, %eax
3:  wrmsr

    mov     %cr0, %eax
    or      $0x80010001, %eax                 /* PG | WP | PE */
    mov     %eax, %cr0

    lgdt    boot_gdtr
    ljmp    $0x08, $long_mode_entry

no_long_mode:
    mov     $no_long_mode_msg, %ebx
4:  movb    (%ebx), %al
    test    %al, %al
    jz      5f
    mov     $COM1, %dx
    outb    %al, %dx
    inc     %ebx
    jmp     4b
5:  hlt
    jmp     5b

    .code64
long_mode_entry:
    mov     $0x10, %eax
    mov     %eax, %ds
    mov     %eax, %es
    mov     %eax, %ss
    xor     %eax, %eax
    mov     %eax, %fs
    mov     %eax, %gs
    mov     %edi, %edi                        /* upper halves are undefined after the mode switch */
    mov     %esi, %esi
    movabs  $boot_stack_top, %rsp
    movabs  $hv_start64, %rax
    call    *%rax
6:  hlt
    jmp     6b

    .section .boot.data, "aw"
    .balign 8
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF                  /* 0x08: 64-bit code, DPL 0 */
    .quad 0x00CF92000000FFFF                  /* 0x10: data, DPL 0 */
boot_gdt_end:
boot_gdtr:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt

no_long_mode_msg:
    .asciz "fatal: this CPU has no long mode; the hypervisor needs x86-64\r\n"

    .balign 4096
boot_pml4:      .fill 4096, 1, 0
boot_pdpt_low:  .fill 4096, 1, 0
boot_pdpt_high: .fill 4096, 1, 0
boot_pd:        .fill 4 * 4096, 1, 0

    .section .bss.boot_stack, "aw", @nobits
    .balign 16
boot_stack:
    .skip 65536
    .global boot_stack_top
boot_stack_top:
