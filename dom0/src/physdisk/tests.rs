use super::*;

/// A disk in memory that can be told to fail.
struct Mem {
    data: Vec<u8>,
    fail: Option<Error>,
    /// The direct transfers asked: (sector, bytes, a write).
    direct: Vec<(u64, usize, bool)>,
}

impl Mem {
    fn log_direct(&mut self, sector: u64, pieces: &[Piece], write: bool) -> Result<(), Error> {
        let bytes = drivers::blk::check_pieces(sector, pieces, self.sectors())?;
        self.direct.push((sector, bytes, write));
        Ok(())
    }
}

impl Driver for Mem {
    fn sectors(&self) -> u64 {
        (self.data.len() / SECTOR) as u64
    }
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), Error> {
        drivers::blk::check_range(sector, buf.len(), self.sectors())?;
        if let Some(e) = self.fail {
            return Err(e);
        }
        let at = usize::try_from(sector).unwrap() * SECTOR;
        buf.copy_from_slice(&self.data[at..at + buf.len()]);
        Ok(())
    }
    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), Error> {
        drivers::blk::check_range(sector, buf.len(), self.sectors())?;
        if let Some(e) = self.fail {
            return Err(e);
        }
        let at = usize::try_from(sector).unwrap() * SECTOR;
        self.data[at..at + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), Error> {
        self.fail.map_or(Ok(()), Err)
    }
    fn read_direct(&mut self, sector: u64, pieces: &[Piece]) -> Result<(), Error> {
        self.log_direct(sector, pieces, false)
    }
    fn write_direct(&mut self, sector: u64, pieces: &[Piece]) -> Result<(), Error> {
        self.log_direct(sector, pieces, true)
    }
}

/// An MBR with `entries` as (type, start, sectors).
fn mbr(entries: &[(u8, u32, u32)]) -> [u8; SECTOR] {
    let mut s = [0u8; SECTOR];
    for (i, &(kind, start, sectors)) in entries.iter().enumerate() {
        let e = &mut s[TABLE + 16 * i..TABLE + 16 * (i + 1)];
        e[4] = kind;
        e[8..12].copy_from_slice(&start.to_le_bytes());
        e[12..16].copy_from_slice(&sectors.to_le_bytes());
    }
    s[510] = 0x55;
    s[511] = 0xAA;
    s
}

#[test]
fn the_mbr_gives_the_partitions_within_the_disk() {
    let table = mbr(&[
        (0x83, 2048, 100),
        (0, 4096, 10),
        (0x83, 4096, 0),
        (0x83, 3000, 200),
    ]);
    assert_eq!(
        parse_mbr(&table, 3100),
        [Partition {
            number: 1,
            start: 2048,
            sectors: 100
        }]
    );
    assert_eq!(parse_mbr(&table, 3200).len(), 2);
    assert_eq!(parse_mbr(&table, 3200)[1].number, 4);
    let mut unsigned = table;
    unsigned[511] = 0;
    assert!(parse_mbr(&unsigned, 4000).is_empty());
    assert!(parse_mbr(&[0; SECTOR], 4000).is_empty());
}

#[test]
fn names() {
    assert_eq!(parse_name("vda"), Some((0, 0)));
    assert_eq!(parse_name("vdb2"), Some((1, 2)));
    assert_eq!(parse_name("vdz4"), Some((25, 4)));
    for bad in ["vd", "vda0", "vda5", "vda12", "xvda", "vdA", "sda1", ""] {
        assert_eq!(parse_name(bad), None, "{bad}");
    }
    assert_eq!(disk_name(0), Some(*b"vda"));
    assert_eq!(disk_name(25), Some(*b"vdz"));
    assert_eq!(disk_name(26), None);
}

#[test]
fn a_slice_reaches_only_its_own_sectors() {
    let disk = Rc::new(RefCell::new(Mem {
        data: vec![0; 64 * SECTOR],
        fail: None,
        direct: Vec::new(),
    }));
    assert!(Slice::new(disk.clone(), 60, 5, true).is_none());
    let mut a = Slice::new(disk.clone(), 8, 16, true).unwrap();
    let mut b = Slice::new(disk.clone(), 24, 8, false).unwrap();
    assert_eq!((a.sectors(), b.sectors()), (16, 8));
    a.write(15, &[7; SECTOR]).unwrap();
    assert_eq!(disk.borrow().data[23 * SECTOR], 7);
    assert_eq!(
        a.write(15, &[7; 2 * SECTOR]),
        Err(DeviceError("past the end of the partition"))
    );
    assert_eq!(
        a.read(0, &mut [0; 3]),
        Err(DeviceError("past the end of the partition"))
    );
    assert_eq!(b.write(0, &[1; SECTOR]), Err(DeviceError("read-only")));
    disk.borrow_mut().data[24 * SECTOR] = 9;
    let mut buf = [0; SECTOR];
    b.read(0, &mut buf).unwrap();
    assert_eq!(buf[0], 9);
    assert_eq!(b.flush(), Ok(()));
    assert!(!b.can_discard());
}

#[test]
fn device_errors_become_logged_reasons() {
    let disk = Rc::new(RefCell::new(Mem {
        data: vec![0; 8 * SECTOR],
        fail: Some(Error::Io(1)),
        direct: Vec::new(),
    }));
    let mut whole = Slice::new(disk.clone(), 0, 8, true).unwrap();
    assert_eq!(
        whole.read(0, &mut [0; SECTOR]),
        Err(DeviceError("the disk reported an I/O error"))
    );
    disk.borrow_mut().fail = Some(Error::Timeout);
    assert_eq!(
        whole.flush(),
        Err(DeviceError("the disk did not answer in time"))
    );
}

#[test]
fn direct_transfers_land_in_the_slice_and_stay_inside_it() {
    let device = Rc::new(RefCell::new(Mem {
        data: vec![0; 64 * SECTOR],
        fail: None,
        direct: Vec::new(),
    }));
    let mut slice = Slice::new(device.clone(), 16, 32, true).unwrap();
    let mut ro = Slice::new(device.clone(), 16, 32, false).unwrap();
    let page = Piece {
        bus: 0x4000,
        len: 4096,
    };
    assert!(slice.direct());
    assert_eq!(slice.read_direct(8, &[page, page]), Ok(()));
    assert_eq!(slice.write_direct(24, &[page]), Ok(()));
    assert!(slice.read_direct(25, &[page]).is_err());
    assert!(ro.write_direct(0, &[page]).is_err());
    assert_eq!(ro.read_direct(0, &[page]), Ok(()));
    assert_eq!(
        device.borrow().direct,
        [(24, 8192, false), (40, 4096, true), (16, 4096, false)]
    );
}
