use super::*;

#[test]
fn ranges_must_be_whole_sectors_inside_the_disk() {
    assert_eq!(check_range(0, 512, 1), Ok(()));
    assert_eq!(check_range(0, 0, 0), Ok(()));
    assert_eq!(check_range(1, 512, 1), Err(Error::Invalid));
    assert_eq!(check_range(0, 511, 8), Err(Error::Invalid));
    assert_eq!(check_range(u64::MAX, 512, u64::MAX), Err(Error::Invalid));
    assert_eq!(check_range(8, 4096, 16), Ok(()));
}

#[test]
fn request_headers_are_type_reserved_sector() {
    let header = request_header(T_OUT, 0x0102_0304_0506_0708);
    assert_eq!(header, [1, 0, 0, 0, 0, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1]);
}

#[test]
fn patterns_differ_by_sector_and_seed() {
    let mut a = [0; SECTOR];
    let mut b = [0; SECTOR];
    pattern(5, 1, &mut a);
    pattern(5, 1, &mut b);
    assert_eq!(a, b);
    pattern(6, 1, &mut b);
    assert_ne!(a, b);
    pattern(5, 2, &mut b);
    assert_ne!(a, b);
}

#[test]
fn direct_pieces_are_pages_of_whole_sectors_inside_the_disk() {
    let page = |len| Piece { bus: 0x1000, len };
    assert_eq!(check_pieces(0, &[page(4096), page(512)], 9), Ok(4608));
    assert_eq!(check_pieces(0, &[page(256), page(256)], 1), Ok(512));
    assert_eq!(check_pieces(0, &[], 9), Err(Error::Invalid));
    assert_eq!(check_pieces(0, &[page(0)], 9), Err(Error::Invalid));
    assert_eq!(check_pieces(0, &[page(4097)], 9), Err(Error::Invalid));
    assert_eq!(check_pieces(0, &[page(256)], 9), Err(Error::Invalid));
    assert_eq!(check_pieces(1, &[page(4096)], 8), Err(Error::Invalid));
    assert_eq!(
        check_pieces(0, &[page(512); MAX_PIECES], 64),
        Ok(MAX_PIECES * 512)
    );
    assert_eq!(
        check_pieces(0, &[page(512); MAX_PIECES + 1], 64),
        Err(Error::Invalid)
    );
}
