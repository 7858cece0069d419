//! Plain-text tables: a header row and aligned columns separated by two spaces.

use std::fmt::Write as _;

/// How a column's cells line up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    Left,
    /// For numbers.
    Right,
}

pub struct Table {
    headers: Vec<&'static str>,
    aligns: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Columns named `headers`, left-aligned except those listed in `right`.
    pub fn new(headers: &[&'static str], right: &[&'static str]) -> Self {
        let aligns = headers
            .iter()
            .map(|header| {
                if right.contains(header) {
                    Align::Right
                } else {
                    Align::Left
                }
            })
            .collect();
        Self {
            headers: headers.to_vec(),
            aligns,
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are blank, extra ones are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn widths(&self) -> Vec<usize> {
        self.headers
            .iter()
            .enumerate()
            .map(|(column, header)| {
                self.rows
                    .iter()
                    .filter_map(|row| row.get(column))
                    .map(|cell| cell.chars().count())
                    .chain([header.chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect()
    }

    fn write_line(&self, out: &mut String, cells: &[&str], widths: &[usize]) {
        let mut line = String::new();
        for (column, width) in widths.iter().enumerate() {
            let cell = cells.get(column).copied().unwrap_or("");
            if column > 0 {
                line.push_str("  ");
            }
            let _ = match self.aligns[column] {
                Align::Left => write!(line, "{cell:<width$}"),
                Align::Right => write!(line, "{cell:>width$}"),
            };
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }

    /// The table, one line per row, each ending in a newline.
    pub fn render(&self) -> String {
        let widths = self.widths();
        let mut out = String::new();
        self.write_line(&mut out, &self.headers, &widths);
        for row in &self.rows {
            let cells: Vec<&str> = row.iter().map(String::as_str).collect();
            self.write_line(&mut out, &cells, &widths);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_numbers_go_right() {
        let mut table = Table::new(&["NAME", "PACKETS", "NOTE"], &["PACKETS"]);
        table.row(vec!["node1".into(), "5".into(), "here".into()]);
        table.row(vec!["a-long-name".into(), "12345".into(), String::new()]);
        table.row(vec!["x".into()]);
        assert_eq!(
            table.render(),
            "NAME         PACKETS  NOTE\n\
             node1              5  here\n\
             a-long-name    12345\n\
             x\n"
        );
    }

    #[test]
    fn width_counts_characters_not_bytes() {
        let mut table = Table::new(&["A", "B"], &[]);
        table.row(vec!["→→".into(), "x".into()]);
        assert_eq!(table.render(), "A   B\n→→  x\n");
    }
}
